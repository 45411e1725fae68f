"""Rows/s of a corpus job against the engine's own throughput on the same texts (goal: >= 90 %).

    engine   pipe(texts): the whole list in one call, in-process (the engine sorts all of it at once)
    job      classify_file(...) on the CSV of the same rows, same pipeline object: reading, chunking,
             writing, fsync and the commit record included, model loading excluded
    cli      `coulisse classify -i FILE -o FILE` as a subprocess: wall time (startup and model loading
             included) and the rows/s of its chunk loop, from its summary line

Engine and job runs alternate (`--repeats` times each) so that a machine shared with other work
slows both alike; the ratio of medians is printed. Texts: the Allociné sample of ../shared (a seeded
subset with --rows). Model: the random camembert-base-sized classifier of bench_model.py (built on
first use), or --model DIR (e.g. tests/fixtures/tf_camembert, where bookkeeping weighs most).

    python bench/jobs_throughput.py --rows 128
    python bench/jobs_throughput.py --model tests/fixtures/tf_camembert
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_model import DEFAULT_DIR, build_model  # noqa: E402  (bench/ is not a package)
from bench_texts import ALLOCINE  # noqa: E402

# The console script's entry point (`python -m coulisse.interfaces.cli` would import the CLI module twice).
MAIN = "from coulisse.interfaces.cli import main; main()"


def subset(rows: int | None, workdir: Path) -> tuple[Path, list[str]]:
    with ALLOCINE.open(encoding="utf-8", newline="") as f:
        records = list(csv.DictReader(f))
    if rows is None or rows >= len(records):
        return ALLOCINE, [r["text"] for r in records]
    picked = sorted(random.Random(0).sample(range(len(records)), rows))
    path = workdir / f"allocine-{rows}.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, ["text", "label"])
        w.writeheader()
        w.writerows(records[i] for i in picked)
    return path, [records[i]["text"] for i in picked]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_cli(model: str, source: Path, output: Path, threads: int | None, batch_rows: int):
    """(wall seconds, rows/s of the chunk loop) of one `coulisse classify --input` process."""
    cmd = [sys.executable, "-c", MAIN, "classify", "-m", model, "-i", str(source),
           "-o", str(output), "--overwrite", "-b", str(batch_rows)]
    cmd += ["-t", str(threads)] if threads else []
    wall = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - wall
    loop = float(re.search(r"\(([\d,.]+) rows/s", done.stderr).group(1).replace(",", ""))
    return wall, loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help=f"checkpoint folder (default: {DEFAULT_DIR})")
    parser.add_argument("--rows", type=int, default=None, help="a seeded subset of the 2,000 reviews")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch-rows", type=int, default=1024)
    parser.add_argument("--no-cli", action="store_true", help="skip the subprocess run")
    args = parser.parse_args()

    import coulisse
    from coulisse.interfaces.jobs.runner import JobOptions, classify_file

    model = args.model or str(DEFAULT_DIR)
    if args.model is None and not (DEFAULT_DIR / "config.json").exists():
        build_model(DEFAULT_DIR)
    workdir = Path(tempfile.mkdtemp(prefix="coulisse-jobs-bench-"))
    source, texts = subset(args.rows, workdir)
    pipe = coulisse.pipeline("sentiment-analysis", model=model, threads=args.threads)
    pipe(texts[:8])  # warm-up
    job = JobOptions(input=str(source), output=str(workdir / "out.csv"), overwrite=True, quiet=True,
                     batch_rows=args.batch_rows)
    engine, jobs = [], []
    for repeat in range(args.repeats):  # ABBA order: a trend in the machine's load hits both alike
        for kind in ("engine", "job") if repeat % 2 == 0 else ("job", "engine"):
            if kind == "engine":
                engine.append(len(texts) / timed(lambda: pipe(texts)))
            else:
                jobs.append(len(texts) / timed(lambda: classify_file(job, lambda: pipe)))
        print(f"engine {engine[-1]:8.2f} rows/s   job {jobs[-1]:8.2f} rows/s", flush=True)
    e, j = statistics.median(engine), statistics.median(jobs)
    import torch

    print(f"model {model}, {len(texts):,} reviews, batch_rows {args.batch_rows}, torch threads "
          f"{torch.get_num_threads()}, cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    print(f"median: engine {e:.2f} rows/s, job {j:.2f} rows/s, job / engine = {j / e:.1%}")
    if not args.no_cli:
        wall, loop = run_cli(model, source, workdir / "cli.csv", args.threads, args.batch_rows)
        print(f"cli: {wall:.1f} s wall ({len(texts) / wall:.2f} rows/s end to end), chunk loop "
              f"{loop:.2f} rows/s = {loop / e:.1%} of the engine's median")


if __name__ == "__main__":
    main()
