"""SPLADE sparse embeddings: coulisse's `SparseEncoder` against sentence-transformers' on the same folder, in
one process, passes alternated; a benchmark, not a test (tests/test_sparse_encoder.py proves the equality).

The model is camembert-base's shape with random weights and the real CamemBERT tokenizer (bench_model.py's),
saved as `CamembertForMaskedLM` and wrapped by sentence-transformers into a SparseEncoder folder (Transformer
fill-mask + SpladePooling max); texts are Allociné reviews. Prints reviews/s of each (best of the passes), the
ratio, and the largest weight difference.

    python bench/splade.py [--n 64] [--repeats 3] [--threads 2] [--quantize int8]
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from sentence_transformers import SparseEncoder as Theirs

    from coulisse import SparseEncoder as Ours

    texts, source = load_texts(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        folder = build(Path(tmp))
        encoders = {"sentence-transformers": Theirs(str(folder), device="cpu"),
                    "coulisse exact": Ours(folder, threads=args.threads)}
        if args.quantize:
            encoders["coulisse int8"] = Ours(folder, threads=args.threads, quantize=args.quantize)
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
    print(f"{'encoder':<24}{'reviews/s':>10}{'x ST':>8}{'max |dw| vs ST':>16}{'top-20 overlap':>16}")
    for name in encoders:
        delta = float((results[name] - reference).abs().max())
        overlap = sum(len(set(a.topk(20).indices.tolist()) & set(b.topk(20).indices.tolist()))
                      for a, b in zip(results[name], reference, strict=True)) / (20 * len(texts))
        print(f"{name:<24}{len(texts) / best[name]:>10.2f}{best['sentence-transformers'] / best[name]:>7.2f}x"
              f"{delta:>16.2e}{overlap:>15.1%}")


if __name__ == "__main__":
    main()
