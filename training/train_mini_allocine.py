"""Train coulisse's bundled French sentiment model, `coulisse/mini-allocine`, on the Allociné sample.

    python training/train_mini_allocine.py            # from the repository root; see training/README.md

A one-layer CamemBERT (hidden size 64) with the real CamemBERT SentencePiece tokenizer learns from 1,585
labelled reviews by distillation: a TF-IDF (word and character n-grams) + logistic regression teacher,
fitted on the training reviews only, labels 40,000 texts made from them (sentence windows, pairs of windows
from two reviews, reviews with words dropped); the student fits the teacher's probabilities on all of
them and the true label on the whole reviews. Reviews whose sha256 starts with a byte divisible by 5 are
held out: no step here sees them before the final measurement. The folder written is what
`coulisse.pipeline("sentiment-analysis", model=folder)` and transformers' `from_pretrained` load.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from model_card import write_card

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "allocine-sample" / "train.csv"
DEFAULT_OUT = REPO / "src" / "coulisse" / "bundled" / "mini-allocine"
LABELS = {0: "NEGATIVE", 1: "POSITIVE"}  # tblard/tf-allocine's
SPECIALS = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", sep_token="</s>", cls_token="<s>",
                pad_token="<pad>", mask_token="<mask>")
PAD_ID = 1
# Sentence ends, French ellipsis included; used to cut reviews into windows.
SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the result; recorded in the model card."""

    seed: int = 0
    hidden: int = 64
    layers: int = 1
    heads: int = 2
    intermediate: int = 256
    dropout: float = 0.1
    augmented: int = 40_000  # teacher-labelled texts made from the training reviews
    epochs: int = 4
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    truth_weight: float = 0.5  # weight of the true label's loss next to the teacher's, on whole reviews
    word_drop: float = 0.2
    max_tokens_review: int = 512
    max_tokens_augmented: int = 256
    teacher_c: float = 10.0


# -- data -------------------------------------------------------------------------------------------------


def is_held_out(text: str) -> bool:
    """The held-out rule, recomputable from the text alone (≈ 20 % of reviews)."""
    return hashlib.sha256(text.encode("utf-8")).digest()[0] % 5 == 0


def read_reviews(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], np.array([int(r["label"]) for r in rows])


def augment(texts: list[str], n: int, word_drop: float, rng: random.Random) -> list[str]:
    """Texts the teacher labels: half a window of consecutive sentences of one review, 30 % two windows
    from two reviews (sentiments mixed), 20 % a whole review with each word dropped with `word_drop`."""
    sentences = [[s for s in SENTENCE_END.split(t) if s.strip()] or [t] for t in texts]

    def window(k: int) -> list[str]:
        s = sentences[k]
        start = rng.randrange(len(s))
        return s[start:rng.randint(start + 1, len(s))]

    out = []
    for _ in range(n):
        k, draw = rng.randrange(len(texts)), rng.random()
        if draw < 0.5:
            out.append(" ".join(window(k)))
        elif draw < 0.8:
            out.append(" ".join(window(k) + window(rng.randrange(len(texts)))))
        else:
            kept = [w for w in texts[k].split() if rng.random() >= word_drop]
            out.append(" ".join(kept) or texts[k])
    return out


# -- bag-of-n-grams models (the baseline and the teacher) ------------------------------------------------


def baseline(train: list[str], labels: np.ndarray):
    """The reference to beat: TF-IDF of word unigrams and bigrams + logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          LogisticRegression(C=10, max_iter=3000))
    return model.fit(train, labels)


def teacher(train: list[str], labels: np.ndarray, c: float):
    """TF-IDF of word 1-2-grams and character 2-5-grams (within words) + logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True))
    return make_pipeline(features, LogisticRegression(C=c, max_iter=3000)).fit(train, labels)


# -- the student -----------------------------------------------------------------------------------------


def student(recipe: Recipe):
    from transformers import CamembertConfig, CamembertForSequenceClassification

    config = CamembertConfig(
        vocab_size=32005, hidden_size=recipe.hidden, num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads, intermediate_size=recipe.intermediate,
        hidden_dropout_prob=recipe.dropout, attention_probs_dropout_prob=recipe.dropout,
        max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
        pad_token_id=PAD_ID, bos_token_id=5, eos_token_id=6,
        id2label=dict(LABELS), label2id={v: k for k, v in LABELS.items()},
    )
    return CamembertForSequenceClassification(config)


def padded(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(seqs), max(map(len, seqs))), PAD_ID)
    for row, seq in enumerate(seqs):
        ids[row, :len(seq)] = torch.tensor(seq)
    return ids, (ids != PAD_ID).long()


def batches(items: list, size: int, rng: random.Random) -> list[list]:
    """Shuffled batches of similar lengths (sorted within chunks of 50 batches), so padding stays small."""
    items = items[:]
    rng.shuffle(items)
    out = []
    for start in range(0, len(items), size * 50):
        chunk = sorted(items[start:start + size * 50], key=lambda item: len(item[0]))
        out += [chunk[i:i + size] for i in range(0, len(chunk), size)]
    rng.shuffle(out)
    return out


def train_student(model, items: list, recipe: Recipe, rng: random.Random) -> None:
    """items: (token ids, teacher logit, true label or None). Loss: binary cross-entropy of the student's
    logit margin against the teacher's probability, plus `truth_weight` × that against the true label."""
    steps_per_epoch = math.ceil(len(items) / recipe.batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, pct_start=0.1,
                                                   total_steps=recipe.epochs * steps_per_epoch)
    model.train()
    for epoch in range(recipe.epochs):
        started, total = time.perf_counter(), 0.0
        for batch in batches(items, recipe.batch, rng):
            ids, mask = padded([item[0] for item in batch])
            logits = model(input_ids=ids, attention_mask=mask).logits
            margin = logits[:, 1] - logits[:, 0]  # (B,)
            target = torch.sigmoid(torch.tensor([item[1] for item in batch], dtype=torch.float32))
            loss = F.binary_cross_entropy_with_logits(margin, target)
            known = [(row, item[2]) for row, item in enumerate(batch) if item[2] is not None]
            if known:
                rows = torch.tensor([row for row, _ in known])
                truth = torch.tensor([float(label) for _, label in known])
                loss = loss + recipe.truth_weight * len(known) / len(batch) * F.binary_cross_entropy_with_logits(
                    margin[rows], truth)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            total += loss.item()
        print(f"epoch {epoch + 1}/{recipe.epochs}: loss {total / steps_per_epoch:.4f} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    model.eval()


def predict(model, encoded: list[list[int]], batch: int = 64) -> np.ndarray:
    """Predicted class per text, in length-sorted batches."""
    order = sorted(range(len(encoded)), key=lambda k: len(encoded[k]))
    out = np.zeros(len(encoded), dtype=int)
    with torch.no_grad():
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            ids, mask = padded([encoded[k] for k in rows])
            out[rows] = model(input_ids=ids, attention_mask=mask).logits.argmax(-1).numpy()
    return out


# -- measuring and writing -------------------------------------------------------------------------------


def wilson(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion."""
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def score(predictions: np.ndarray, labels: np.ndarray) -> dict:
    correct = int((predictions == labels).sum())
    low, high = wilson(correct, len(labels))
    return dict(correct=correct, n=len(labels), accuracy=correct / len(labels), low=low, high=high)


def describe(name: str, s: dict) -> str:
    return (f"{name}: {100 * s['accuracy']:.1f} % ({s['correct']}/{s['n']}; 95 % Wilson interval "
            f"{100 * s['low']:.1f}–{100 * s['high']:.1f} %)")


def write_tokenizer(out: Path, spm: Path) -> None:
    """CamemBERT's own SentencePiece model and the settings transformers and coulisse both read."""
    shutil.copy(spm, out / "sentencepiece.bpe.model")
    (out / "special_tokens_map.json").write_text(json.dumps(SPECIALS, indent=2) + "\n", encoding="utf-8")
    settings = dict(tokenizer_class="CamembertTokenizer", model_max_length=512, **SPECIALS)
    (out / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def coulisse_scores(out: Path, texts: list[str], labels: np.ndarray) -> dict:
    """The held-out accuracy through coulisse's normal loading path: the number the card states."""
    from coulisse import pipeline

    pipe = pipeline("sentiment-analysis", model=out)
    names = {v: k for k, v in LABELS.items()}
    return score(np.array([names[r["label"]] for r in pipe(texts)]), labels)


def camembert_spm() -> Path:
    import subtitle_splitter_fr

    return Path(subtitle_splitter_fr.__file__).parent / "models" / "tokenizer" / "sentencepiece.bpe.model"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA,
                        help="the Allociné sample's train.csv (text,label; default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write (default: %(default)s)")
    parser.add_argument("--spm", type=Path, default=None,
                        help="CamemBERT's sentencepiece.bpe.model (default: the one subtitle-splitter-fr ships)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; the shipped model was trained on 1 (results depend on it)")
    return parser.parse_args()


def split(path: Path) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """(training texts, labels, held-out texts, labels)."""
    texts, labels = read_reviews(path)
    held = np.array([is_held_out(t) for t in texts])
    train = [t for t, h in zip(texts, held, strict=True) if not h]
    test = [t for t, h in zip(texts, held, strict=True) if h]
    return train, labels[~held], test, labels[held]


def distillation_items(tokenizer, tutor, train: list[str], train_y: np.ndarray, recipe: Recipe,
                       rng: random.Random) -> list[tuple]:
    """(token ids, teacher logit, true label or None): the training reviews, then the augmented texts."""
    extra = augment(train, recipe.augmented, recipe.word_drop, rng)
    ids = tokenizer(train, truncation=True, max_length=recipe.max_tokens_review)["input_ids"]
    extra_ids = tokenizer(extra, truncation=True, max_length=recipe.max_tokens_augmented)["input_ids"]
    items = [(i, float(t), int(y)) for i, t, y in zip(ids, tutor.decision_function(train), train_y, strict=True)]
    items += [(i, float(t), None) for i, t in zip(extra_ids, tutor.decision_function(extra), strict=True)]
    return items


def main() -> None:
    args = parse_args()
    if not args.data.is_file():
        raise SystemExit(f"{args.data} is absent: pass the Allociné sample's train.csv as first argument.")
    recipe = Recipe()
    started = time.perf_counter()
    random.seed(recipe.seed)
    np.random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    train, train_y, test, test_y = split(args.data)
    print(f"{len(train)} training reviews, {len(test)} held out ({int(test_y.sum())} positive)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_tokenizer(args.out, args.spm or camembert_spm())
    tokenizer = AutoTokenizer.from_pretrained(args.out)

    rng = random.Random(recipe.seed)
    tutor = teacher(train, train_y, recipe.teacher_c)
    items = distillation_items(tokenizer, tutor, train, train_y, recipe, rng)
    print(f"{len(items)} texts labelled by the teacher ({time.perf_counter() - started:.0f} s)", flush=True)
    model = student(recipe)
    train_student(model, items, recipe, rng)
    model.save_pretrained(args.out)
    (args.out / "model.safetensors").chmod(0o644)  # save_pretrained writes 0600; the wheel must be readable

    test_ids = tokenizer(test, truncation=True, max_length=512)["input_ids"]
    results = dict(
        student=score(predict(model, test_ids), test_y),
        baseline=score(baseline(train, train_y).predict(test), test_y),
        teacher=score(tutor.predict(test), test_y),
        coulisse=coulisse_scores(args.out, test, test_y),
    )
    minutes = (time.perf_counter() - started) / 60
    write_card(args.out, recipe, results, len(train), len(test), minutes, args.threads)
    for name, s in results.items():
        print(describe(name, s))
    size = (args.out / "model.safetensors").stat().st_size
    print(f"wrote {args.out} (model.safetensors {size / 1e6:.1f} MB) in {minutes:.1f} min")


if __name__ == "__main__":
    main()
