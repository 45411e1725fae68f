"""Where does the engine's time go? torch.profiler over real reviews, fp32 and int8 (not a test).

    python bench/profile_engine.py [--model DIR] [--n 48]

DIR defaults to the camembert-base-sized random model `coulisse bench` builds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench_texts import load_texts  # noqa: E402  (bench/ is run as a script folder)
from torch.profiler import ProfilerActivity, profile

from coulisse import pipeline

DEFAULT_MODEL = Path.home() / ".cache" / "coulisse-bench" / "camembert-base-random"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--n", type=int, default=48)
    args = parser.parse_args()
    texts, _ = load_texts(args.n)
    for quantize in (None, "int8"):
        pipe = pipeline("sentiment-analysis", model=args.model, quantize=quantize)
        start = time.perf_counter()
        items = pipe.preprocess(texts)
        tokenize = time.perf_counter() - start
        pipe.engine.run(items[:4])  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            pipe.engine.run(items)
            forward = time.perf_counter() - start
        print(f"== quantize={quantize}: tokenize {tokenize * 1000:.0f} ms, forward {forward * 1000:.0f} ms")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))


if __name__ == "__main__":
    main()
