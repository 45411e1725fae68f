"""Quality of coulisse's CPU bf16 (`dtype="bfloat16"`) on real weights, measured like int8's (quality_int8.py).

    python bench/quality_bf16.py [--n-train 300] [--json quality.json]

1. Cosine of all-MiniLM-L6-v2 sentence embeddings, bf16 vs fp32 (mean pooling, L2, 256 tokens).
   Goal: mean >= 0.999.
2. A classifier of our own: a logistic-regression head trained on the fp32 embeddings of half of the
   labelled Allociné sample, evaluated on the other half with fp32 and with bf16 embeddings: top-1
   agreement and the largest |Δlogit| of that head between the two.
Without AMX or AVX512-BF16 the bf16 GEMMs run PyTorch's reference path (slow, the same numerics); keep
--n-train small there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_texts  # noqa: E402
from quality_int8 import ENGLISH, MAX_TOKENS, Embedder, cosine_stats, minilm_dir, split, train_head  # noqa: E402


def run(n_train: int, seed: int, threads: int | None) -> dict:
    directory = minilm_dir()
    (train_x, train_y), (held_x, held_y) = split(bench_texts.read_allocine(), n_train, seed)
    fp32 = Embedder(directory, None, threads)
    bf16 = Embedder(directory, None, threads, dtype="bfloat16")
    start = time.perf_counter()
    e_train, e_held = fp32(train_x), fp32(held_x)
    fp32_s = time.perf_counter() - start
    start = time.perf_counter()
    b_held = bf16(held_x)
    bf16_s = time.perf_counter() - start
    w, b = train_head(e_train, train_y.astype(np.float64), seed=seed)
    logit_fp32, logit_bf16 = e_held @ w + b, b_held @ w + b
    pred_fp32, pred_bf16 = (logit_fp32 > 0).astype(int), (logit_bf16 > 0).astype(int)
    return {
        "model": str(directory), "max_tokens": MAX_TOKENS, "seed": seed,
        "seconds": {"fp32_train_and_held": fp32_s, "bf16_held": bf16_s},
        "cosine_reviews": cosine_stats(e_held, b_held),
        "cosine_english": cosine_stats(fp32(ENGLISH), bf16(ENGLISH)),
        "classifier": {
            "train": len(train_y), "held_out": len(held_y),
            "held_out_accuracy_fp32": float((pred_fp32 == held_y).mean()),
            "held_out_accuracy_bf16": float((pred_bf16 == held_y).mean()),
            "top1_agreement_bf16_vs_fp32": float((pred_fp32 == pred_bf16).mean()),
            "disagreements": int((pred_fp32 != pred_bf16).sum()),
            "max_abs_dlogit": float(np.abs(logit_fp32 - logit_bf16).max()),
            "max_abs_logit_fp32": float(np.abs(logit_fp32).max()),
        },
    }


def render(r: dict) -> str:
    def cos(name: str, s: dict) -> str:
        return (f"  {name}: mean {s['mean']:.6f}, median {s['median']:.6f}, p1 {s['p1']:.6f}, "
                f"min {s['min']:.6f} (n={s['n']})")

    c = r["classifier"]
    return "\n".join([
        f"all-MiniLM-L6-v2 ({r['model']}), mean pooling + L2, truncation {r['max_tokens']} tokens",
        "cosine bf16 vs fp32 (goal: mean >= 0.999):",
        cos("Allociné reviews, held out", r["cosine_reviews"]),
        cos("English sentences", r["cosine_english"]),
        f"classifier of our own (logistic regression on fp32 embeddings; {c['train']} train / "
        f"{c['held_out']} held out, seed {r['seed']}):",
        f"  accuracy held out: fp32 {100 * c['held_out_accuracy_fp32']:.1f} %, "
        f"bf16 {100 * c['held_out_accuracy_bf16']:.1f} %",
        f"  top-1 agreement bf16 vs fp32: {100 * c['top1_agreement_bf16_vs_fp32']:.1f} % "
        f"({c['disagreements']} of {c['held_out']} differ)",
        f"  max |Δlogit|: {c['max_abs_dlogit']:.2e} (logits up to {c['max_abs_logit_fp32']:.1f})",
        f"  time: fp32 {r['seconds']['fp32_train_and_held']:.1f} s (train + held out), "
        f"bf16 {r['seconds']['bf16_held']:.1f} s (held out)",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=300, help="reviews to train on (as many held out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if not bench_texts.ALLOCINE.is_file():
        raise SystemExit(f"{bench_texts.ALLOCINE} is absent; the quality figures need the labelled reviews.")
    result = run(args.n_train, args.seed, args.threads)
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
