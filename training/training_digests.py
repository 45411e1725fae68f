"""Write the bundled model's list of the reviews it learnt from, as digests: `coulisse evaluate` reads it to
say how many of the rows it scores are training reviews (the card's split: `train_mini_allocine.split`).

    python training/training_digests.py [../shared/data/allocine-sample/train.csv]

One line per training review: the first 16 hex digits of `sha256(text.encode("utf-8"))`, sorted; the reviews
themselves are not distributed with the model.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from train_mini_allocine import DEFAULT_DATA, REPO, split

OUT = REPO / "src" / "coulisse" / "bundled" / "mini-allocine" / "training_texts.sha256"
DIGITS = 16  # 64 bits: no two of 2,000 reviews, nor a user's row, collide by chance


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGITS]


def main() -> None:
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DATA
    train = split(data)[0]
    digests = sorted({digest(t) for t in train})  # a review written twice is one text, on one side of the split
    OUT.write_text("".join(d + "\n" for d in digests), encoding="ascii")
    print(f"wrote {OUT} ({len(digests)} distinct texts of {len(train)} training reviews)")


if __name__ == "__main__":
    main()
