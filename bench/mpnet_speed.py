"""MPNet: coulisse's exact and `--fast` forwards against transformers 5's, on an MPNet-base-sized random classifier.

The model has sentence-transformers/all-mpnet-base-v2's shape (12 layers, hidden 768, 12 heads, 32 relative-position
buckets); the tokenizer is a lower-casing WordPiece in MPNet's vocab.txt layout (`<s> <pad> </s> <unk>` first,
`<mask>` last) trained on the reviews themselves (30k entries), so the token counts are those of a French review.
As in bench/modernbert_speed.py: the same texts in batches of `--batch` reviews, tokenized beforehand (only the
forward is timed), transformers on padded batches (SDPA), coulisse on packed ones; the median of `--repeats` passes
for each side, run in turns, and of their ratios, at each thread count, for each of `--modes`.

    python bench/mpnet_speed.py --texts 64 --threads 1 2 --modes exact fast
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from modernbert_speed import REVIEWS, compare, reviews

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "[UNK]")


def build(directory: Path, corpus: list[str]) -> None:
    """An MPNet-base-sized random classifier and a WordPiece vocab.txt in MPNet's layout, saved in `directory`."""
    import transformers
    from tokenizers import BertWordPieceTokenizer

    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(corpus, vocab_size=30_000, special_tokens=list(SPECIALS), show_progress=False)
    words = [w for w, _ in sorted(trainer.get_vocab().items(), key=lambda item: item[1])]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join([*words, "<mask>"]) + "\n", encoding="utf-8")
    settings = {"tokenizer_class": "MPNetTokenizer", "do_lower_case": True, "model_max_length": 512}
    (directory / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    torch.manual_seed(0)
    config = transformers.MPNetConfig(vocab_size=len(words) + 1, num_labels=2)
    transformers.MPNetForSequenceClassification(config).eval().save_pretrained(directory)


def main() -> None:
    # the options are spelled out here, not shared, so that the docs' commands are checked against this file
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reviews", type=Path, default=REVIEWS)
    parser.add_argument("--modes", nargs="+", choices=("exact", "fast"), default=["exact", "fast"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mpnet-bench-") as folder:  # the model: 373 MB, not left behind
        directory = Path(folder)
        build(directory, reviews(args.reviews, 2_000))
        compare(directory, reviews(args.reviews, args.texts), args.batch, args.threads, args.repeats, args.modes)


if __name__ == "__main__":
    main()
