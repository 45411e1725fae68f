"""The model card (README.md) of coulisse/mini-allocine, written from the numbers the training run measured."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict
from pathlib import Path

COMMAND = "python training/train_mini_allocine.py"

TEMPLATE = """\
---
language: fr
license: apache-2.0
library_name: transformers
pipeline_tag: text-classification
tags: [sentiment-analysis, camembert, knowledge-distillation]
---

# coulisse/mini-allocine

A small French sentiment classifier for movie reviews (`NEGATIVE`, `POSITIVE`, the labels of
`tblard/tf-allocine`), shipped inside the coulisse package so that sentiment analysis runs with no
download. It is a `CamembertForSequenceClassification` with the real CamemBERT tokenizer, {params:,}
parameters ({megabytes:.1f} MB of fp32 weights, almost all of them the 32,005 × {hidden} token embeddings).
It is a fallback, not a replacement: **tf-allocine reaches 97.4 %**; this model {accuracy:.1f} %.

```python
from coulisse import pipeline

classifier = pipeline("sentiment-analysis", model="coulisse/mini-allocine")
classifier("Un film magnifique, des acteurs excellents.")
```

transformers loads the folder as it is (`AutoTokenizer` / `AutoModelForSequenceClassification.from_pretrained`
on `coulisse/bundled/mini-allocine` inside the installed package) and gives the same token ids and logits.

## Accuracy on held-out Allociné reviews

| model | accuracy | 95 % interval (Wilson) |
| --- | --- | --- |
{rows}
| tblard/tf-allocine (its authors' figure, official test split of 20,000 reviews) | 97.4 % | not measured here |

On {n_test} reviews each interval spans about ±3 points: rows a point or two apart are not told apart.

Held out: the {n_test} reviews of the sample whose `sha256(text.encode("utf-8"))` has a first byte
divisible by 5; the other {n_train} are the training reviews. Nothing in training sees a held-out review:
not the teacher, not the vocabulary of its n-grams, not the choice of the recipe (made on development
folds carved out of the training reviews; one early trial of the method was also scored on the held-out
reviews, and no setting was taken from it). `tests/test_bundled_model.py` recomputes the split and the
accuracy through coulisse.

## Data

`../shared/data/allocine-sample/train.csv`: 2,000 reviews (1,000 positive, 1,000 negative), a stratified
sample of the train split of the Allociné dataset (Théophile Blard, 2020, MIT licence; rating ≤ 2 is
negative, ≥ 4 positive). No other data: the French sentiment lexicons of `vadersentiment-fr` (MIT) and
`textblob-fr` (PDDL) were checked and left out. The reviews are not distributed with the model.

## Method

1. **Teacher**: TF-IDF of word 1–2-grams and character 2–5-grams (within word boundaries, sublinear tf)
   and a logistic regression (C = {teacher_c:g}), fitted on the {n_train} training reviews.
2. **Augmented texts**: {augmented:,} texts made from the training reviews only: 50 % a window of
   consecutive sentences of one review, 30 % two such windows from two reviews, 20 % a whole review with
   each word dropped with probability {word_drop:g}. The teacher labels each with a probability.
3. **Student**: a CamemBERT encoder (layers: {layers}, hidden size {hidden}, attention heads {heads},
   feed-forward {intermediate}, 514 positions) and its classification head, from random initialisation.
   Loss: binary cross-entropy of the student's logit margin against the teacher's probability on every
   text, plus {truth_weight:g} × that against the true label on the whole reviews. AdamW (lr {lr:g},
   one-cycle schedule, weight decay {weight_decay:g}), dropout {dropout:g}, batches of {batch} texts of
   similar length, {epochs} epochs; reviews cut at {max_tokens_review} tokens, augmented texts at
   {max_tokens_augmented}.
4. The baseline row is TF-IDF of word 1–2-grams + logistic regression (C = 10), fitted on the same
   training reviews.

Recipe: `{recipe}`.

## Reproduce

From the repository root, with the test dependencies installed (`pip install -e '.[test]'`):

    {command}

It reads the sample from `../shared/data/allocine-sample/train.csv` (or the path given as first
argument), fixes every seed, runs torch's deterministic algorithms (torch threads: {threads}), prints
the accuracies above and rewrites this folder, this card included; two runs write the same weights, byte
for byte. Recorded run: {minutes:.1f} min on {machine}; torch {torch}, transformers {transformers},
scikit-learn {sklearn}.

## Limits

- **tf-allocine reaches 97.4 %** (a full CamemBERT-base fine-tuned on 160,000 reviews); this model
  learnt from {n_train} reviews and is a student of a bag-of-n-grams model: it weighs sentiment
  words and phrases, and reads negation, irony and contrast ("pas mauvais", "on aurait pu croire que
  c'était génial") poorly.
- The held-out reviews come from the same sample of Allociné's train split as the training reviews, so a
  movie can have reviews on both sides (the official splits have disjoint movies): the figure above is
  likely optimistic for reviews of other movies, and its interval spans about ±3 points.
- Movie reviews only, two classes (the dataset has no neutral reviews: a neutral text still gets one of
  the two labels), French only; texts are cut at 512 tokens.

## Licences

- Weights: trained by the coulisse project, distributed with it under Apache-2.0.
- `sentencepiece.bpe.model`: CamemBERT's tokenizer (Martin et al., 2020), MIT licence, copied unchanged
  from the `subtitle-splitter-fr` package.
- Training data: Allociné dataset, Théophile Blard, MIT licence.
"""


def write_card(out: Path, recipe, results: dict, n_train: int, n_test: int, minutes: float,
               threads: int) -> None:
    import sklearn
    import torch
    import transformers

    names = dict(coulisse="this model (through coulisse)", baseline="TF-IDF + logistic regression baseline",
                 teacher="its teacher (TF-IDF word + character n-grams + logistic regression)")
    rows = "\n".join(f"| {names[k]} | {100 * s['accuracy']:.1f} % ({s['correct']}/{s['n']}) | "
                     f"{100 * s['low']:.1f}–{100 * s['high']:.1f} % |" for k, s in ((k, results[k]) for k in names))
    weights = out / "model.safetensors"
    params = sum(p.numel() for p in _load_params(weights))
    text = TEMPLATE.format(
        rows=rows, n_train=f"{n_train:,}", n_test=n_test, minutes=minutes, threads=threads, command=COMMAND,
        accuracy=100 * results["coulisse"]["accuracy"], params=params, megabytes=weights.stat().st_size / 1e6,
        recipe=recipe, machine=f"a {os.cpu_count()}-core {platform.machine()} machine",
        torch=torch.__version__.split("+")[0], transformers=transformers.__version__, sklearn=sklearn.__version__,
        **asdict(recipe),
    )
    (out / "README.md").write_text(text, encoding="utf-8")


def _load_params(weights: Path):
    from safetensors.torch import load_file

    return load_file(weights).values()
