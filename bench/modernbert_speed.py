"""ModernBERT: coulisse's exact (fp32) forward against transformers 5's, on a ModernBERT-base-sized random classifier.

The model has answerdotai/ModernBERT-base's shape (22 layers, hidden 768, GeGLU 1152, 12 heads, a local window of
128 tokens on two layers in three); the tokenizer is a byte-level BPE in ModernBERT's layout trained on the reviews
themselves (32k entries), so the token counts are those of a French review, not of a tiny test vocabulary.
Both sides run the same texts in batches of `--batch` reviews, tokenized beforehand (only the forward is timed):
transformers on padded batches (SDPA, its default), coulisse on packed ones (its engine). Prints the median of
`--repeats` passes for each side, run in turns, and of their ratios, at each thread count; `--fast` times
coulisse's `--fast` pipeline (int8 or bf16, whichever this CPU runs best) against the same transformers passes.
`--documents N` joins consecutive reviews into documents of up to N tokens (ModernBERT's long inputs: 8,192 at most),
`--texts` of them: the local layers' window then leaves most keys out.

    python bench/modernbert_speed.py --texts 64 --threads 1 2 [--fast]
    python bench/modernbert_speed.py --documents 4096 --texts 2 --batch 1 --threads 1 [--fast]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

# beside the repository, as tests/conftest.py finds it; COULISSE_ALLOCINE names it where a clone lives elsewhere
REVIEWS = Path(os.environ.get("COULISSE_ALLOCINE") or
               Path(__file__).resolve().parents[2] / "shared" / "data" / "allocine-sample" / "train.csv")
SPECIALS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")


def reviews(path: Path, count: int) -> list[str]:
    with path.open(encoding="utf-8", newline="") as f:
        return [row["text"] for row in csv.DictReader(f)][:count]


def build(directory: Path, corpus: list[str]) -> None:
    """A ModernBERT-base-sized random classifier and a BPE tokenizer in ModernBERT's layout, saved in `directory`."""
    import transformers
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=32_000, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens([AddedToken(t, lstrip=t == "[MASK]", normalized=False) for t in SPECIALS])
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS]:0 $A:0 [SEP]:0",
                                                       pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    settings = {"tokenizer_class": "PreTrainedTokenizerFast", "model_input_names": ["input_ids", "attention_mask"],
                "model_max_length": 8192, **{f"{n}_token": f"[{n.upper()}]" for n in ("unk", "cls", "sep", "pad",
                                                                                      "mask")}}
    (directory / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    torch.manual_seed(0)
    config = transformers.ModernBertConfig(vocab_size=tok.get_vocab_size(), pad_token_id=tok.token_to_id("[PAD]"),
                                           cls_token_id=cls, sep_token_id=sep, bos_token_id=cls, eos_token_id=sep,
                                           num_labels=2)
    transformers.ModernBertForSequenceClassification(config).eval().save_pretrained(directory)


def documents(corpus: list[str], count: int, tokens: int, directory: Path) -> list[str]:
    """`count` documents of consecutive reviews, each as many as fit in `tokens` tokens of the model's tokenizer
    (its special tokens included), at least one."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    out, at = [], 0
    while len(out) < count and at < len(corpus):
        doc = corpus[at]
        at += 1
        while at < len(corpus) and len(tok.encode(doc + " " + corpus[at]).ids) <= tokens:
            doc += " " + corpus[at]
            at += 1
        out.append(doc)
    if len(out) < count:
        raise SystemExit(f"the reviews make {len(out)} documents of up to {tokens} tokens, not {count}")
    return out


def paired_seconds(first, second, repeats: int) -> tuple[list[float], list[float]]:
    """Each callable's seconds over `repeats` passes, the two alternating (after one warm-up pass each: oneDNN
    primitives, allocator), so that both meet the same load on a shared machine."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for run, kept in zip((first, second), times, strict=True):
            start = time.perf_counter()
            run()
            kept.append(time.perf_counter() - start)
    return times


def compare(directory: Path, texts: list[str], batch: int, threads: list[int], repeats: int,
            modes: list[str]) -> None:
    """transformers on padded batches of `batch` texts against coulisse's pipeline on packed ones, in each of
    `modes` ("exact", "fast") at each thread count: the texts tokenized beforehand, only the forwards timed."""
    import transformers

    from coulisse import pipeline

    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(str(directory)).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(directory))
    batches = [hf_tok(texts[i:i + batch], padding=True, truncation=True, return_tensors="pt")
               for i in range(0, len(texts), batch)]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["input_ids"].numel() for b in batches)
    print(f"{len(texts)} texts, {tokens} tokens ({tokens / len(texts):.0f} a text), batches of {batch}: "
          f"transformers computes {padded} positions with the padding, coulisse {tokens}")

    def run_theirs():
        with torch.inference_mode():
            for b in batches:
                theirs(**b)

    for count in threads:
        torch.set_num_threads(count)
        for mode in modes:
            ours = pipeline("text-classification", model=directory, threads=count, max_batch_size=batch,
                            fast=mode == "fast")
            # both sides read the same ids
            assert ours.tokenizer(texts[0])["input_ids"] == hf_tok(texts[0])["input_ids"], "the tokenizers differ"
            items = ours.preprocess(texts)
            a, b = paired_seconds(run_theirs, partial(ours.forward, items), repeats)
            ratios = [x / y for x, y in zip(a, b, strict=True)]
            print(f"{count} thread(s): transformers {statistics.median(a):.2f} s, coulisse {mode} "
                  f"{statistics.median(b):.2f} s (medians of {repeats}); {statistics.median(ratios):.2f}x "
                  f"transformers' speed (median of the pairs' ratios, {min(ratios):.2f}-{max(ratios):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reviews", type=Path, default=REVIEWS)
    parser.add_argument("--fast", action="store_true", help="coulisse's --fast pipeline rather than exact")
    parser.add_argument("--documents", type=int, metavar="TOKENS",
                        help="texts of up to TOKENS tokens, consecutive reviews joined, rather than one review each")
    args = parser.parse_args()
    corpus = reviews(args.reviews, 2_000)
    with tempfile.TemporaryDirectory(prefix="modernbert-bench-") as folder:  # the model: 520 MB, not left behind
        directory = Path(folder)
        build(directory, corpus)
        texts = documents(corpus, args.texts, args.documents, directory) if args.documents else corpus[:args.texts]
        compare(directory, texts, args.batch, args.threads, args.repeats, ["fast" if args.fast else "exact"])


if __name__ == "__main__":
    main()
