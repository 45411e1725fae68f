"""Rows/s of `classify --ray` with 1 and 2 actors against the single-process job on the same rows.

    single T   classify_file(...) with T threads: the `coulisse classify -i` chunk loop, model loading excluded
    ray A x 1  distributed.run(...) with A actors of 1 thread each, on a local Ray with 2 CPUs: the shard
               loop (driver reads, actors classify, driver writes and commits), actors started and models
               loaded before the clock starts; "wall" adds that start

Both read the same Parquet file (the Allociné sample of ../shared, or --rows random-word texts where it is
absent) and write Parquet, with the same --batch-rows. Single and Ray runs alternate (`--repeats` times)
so that a machine shared with other work slows them alike; medians are printed, then the ratios the goal
is stated in: ray 1x1 / single 1 (goal >= 85 %), ray 2x1 / single 2.

    python bench/ray_scaling.py                       # the bundled coulisse/mini-allocine
    python bench/ray_scaling.py --model tests/fixtures/tf_camembert --rows 4000
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_texts import ALLOCINE  # noqa: E402  (bench/ is not a package)

WORDS = ["film", "acteur", "scénario", "génial", "nul", "ennuyeux", "magnifique", "histoire", "musique", "fin",
         "début", "drôle", "triste"]


def corpus(rows: int, folder: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if ALLOCINE.is_file():
        with ALLOCINE.open(encoding="utf-8", newline="") as f:
            texts = [r["text"] for r in csv.DictReader(f)]
        texts = (texts * (rows // len(texts) + 1))[:rows]
    else:
        rng = random.Random(0)
        texts = [" ".join(rng.choices(WORDS, k=rng.randint(5, 60))) for _ in range(rows)]
    path = folder / "in" / "corpus.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"id": list(range(rows)), "text": texts}), path)
    return path


def single(source: Path, folder: Path, model: str, threads: int, batch_rows: int) -> float:
    from coulisse.interfaces.jobs.runner import JobOptions, classify_file
    from coulisse.pipelines import pipeline

    out = folder / f"single-{threads}.parquet"
    out.unlink(missing_ok=True)
    job = JobOptions(input=str(source), output=str(out), batch_rows=batch_rows, model=model, quiet=True,
                     overwrite=True)
    summary = classify_file(job, lambda: pipeline("text-classification", model=model, threads=threads))
    return summary.rows_per_second


def on_ray(source: Path, folder: Path, model: str, actors: int, batch_rows: int) -> tuple[float, float]:
    from coulisse.interfaces.jobs import distributed

    out = folder / f"ray-{actors}"
    shutil.rmtree(out, ignore_errors=True)
    options = distributed.RayOptions(input=str(source), output=str(out), model=model, actors=actors, threads=1,
                                     batch_rows=batch_rows, quiet=True)
    start = time.perf_counter()
    summary = distributed.run(options)
    return summary.rows_per_second, summary.rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="coulisse/mini-allocine")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--batch-rows", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local Ray
    ray.init(num_cpus=2, object_store_memory=100 * 1024**2, include_dashboard=False, logging_level="WARNING",
             log_to_driver=False)
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = corpus(args.rows, folder)
        for _ in range(args.repeats):
            for threads in (1, 2):
                results.setdefault(f"single {threads}", []).append(
                    single(source, folder, args.model, threads, args.batch_rows))
            for actors in (1, 2):
                loop, wall = on_ray(source, folder, args.model, actors, args.batch_rows)
                results.setdefault(f"ray {actors}x1", []).append(loop)
                results.setdefault(f"ray {actors}x1 wall", []).append(wall)
    ray.shutdown()
    median = {name: statistics.median(values) for name, values in results.items()}
    print(f"{args.rows} rows, --batch-rows {args.batch_rows}, model {args.model}, {os.cpu_count()} CPUs")
    for name, value in median.items():
        print(f"  {name:<16} {value:8.1f} rows/s   (runs: {', '.join(f'{v:.1f}' for v in results[name])})")
    print(f"  ray 1x1 / single 1: {median['ray 1x1'] / median['single 1']:.1%} (goal >= 85 %)")
    print(f"  ray 2x1 / single 2: {median['ray 2x1'] / median['single 2']:.1%}")
    print(f"  ray 2x1 / ray 1x1:  {median['ray 2x1'] / median['ray 1x1']:.2f}x")


if __name__ == "__main__":
    main()
