"""Where does the engine's time go? Shares of the forward by category, per precision (not a test).

    python bench/profile_engine.py [--model DIR] [--n 48] [--modes exact,int8,bf16,fast] [--ops]
    python bench/profile_engine.py --ab 5 [--modes exact,int8] [--switch COULISSE_INT8_GEMM=onednn]

DIR defaults to the camembert-base-sized random model `coulisse bench` builds. Each mode's forward over
the same real reviews runs once under torch.profiler; every op's self time goes to the category of the
innermost op (itself or an enclosing one) that names one: GEMM, attention, GELU/activation, residual
add + LayerNorm, padding/scatter copies, embeddings. The int8 path's C kernels (quantize, dequantize,
the fused dequantize + residual + LayerNorm) are no torch ops: this script wraps them in
`record_function` ranges, here only, so the library pays nothing for it. "other/Python" is the
forward's wall time minus all of that. `--ops` also prints torch's table of the top ops.

`--ab K` measures a switch instead: per mode, one pipeline built with `--switch` set (default
`COULISSE_FUSE=0`, the fusions off; `COULISSE_INT8_GEMM=onednn` keeps oneDNN's int8 GEMM) and one without,
run alternately K times each over the same batch (no profiler), best and median of K each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

from bench_texts import load_texts  # noqa: E402  (bench/ is run as a script folder)
from torch.profiler import ProfilerActivity, profile, record_function

from coulisse import pipeline
from coulisse.models import fastpath, native, quantize

DEFAULT_MODEL = Path.home() / ".cache" / "coulisse-bench" / "camembert-base-random"
MODES = {"exact": {}, "exact-job": {"throughput": True}, "int8": {"quantize": "int8"}, "bf16": {"dtype": "bfloat16"},
         "fast": {"fast": True}}  # exact-job: the fp32 kernels corpus jobs choose (throughput=True)

CATEGORIES = {  # op name -> category; the innermost named op of a call stack decides
    "GEMM": ("aten::linear", "aten::addmm", "aten::mm", "aten::matmul", "mkldnn::_linear_pointwise",
             "onednn::qlinear_pointwise", "quantized::linear_with_input_q_dq_qweight_dq_output_fp32",
             "quantized::linear_dynamic"),
    "attention": ("aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::_softmax", "aten::softmax", "aten::bmm", "aten::baddbmm", "aten::masked_fill",
                  "coulisse::attention"),
    "GELU/act": ("aten::gelu", "aten::relu", "aten::silu", "aten::tanh"),
    "add+LayerNorm": ("aten::add", "aten::add_", "aten::layer_norm", "aten::native_layer_norm"),
    "copies": ("aten::index_put_", "aten::index", "aten::fill_", "aten::zero_", "aten::new_zeros",
               "aten::zeros", "aten::copy_", "aten::_to_copy", "aten::to", "aten::clone", "aten::contiguous",
               "aten::cat"),
    "int8 C kernels": ("coulisse::quantize_rows", "coulisse::dequantize_rows", "coulisse::add_norm_rows"),
    # coulisse's int8 GEMM (VNNI without AMX): its product and the row passes it runs inside the same call
    "own int8 GEMM + row passes": ("coulisse::int8_gemm",),
    "embeddings": ("aten::embedding", "aten::index_select"),
}
CATEGORY_OF = {op: cat for cat, ops in CATEGORIES.items() for op in ops}
COLUMNS = [*CATEGORIES, "other/Python"]


def _instrument_int8() -> None:
    """Wrap the C-kernel calls in profiler ranges: the int8 path's (module attributes, looked up per call)
    and the C attention (installed on each model at load: wrapped before the pipelines are built)."""
    original_attention = fastpath.c_packed_attention

    def timed_attention(*args, **kwargs):
        with record_function("coulisse::attention"):
            return original_attention(*args, **kwargs)

    fastpath.c_packed_attention = timed_attention
    # the row passes are looked up per call in quantize (int8) and in native (fp32 layers, embeddings)
    for module, name in ((quantize, "quantize_rows"), (quantize, "dequantize_rows"), (quantize, "add_norm_rows"),
                         (native, "dequantize_rows"), (native, "add_norm_rows")):
        original = getattr(module, name, None)
        if original is None:
            continue

        def timed(*args, _f=original, _label=f"coulisse::{name}", **kwargs):
            with record_function(_label):
                return _f(*args, **kwargs)

        setattr(module, name, timed)
    for method in ("_int8_gemm", "_few_rows"):  # coulisse's GEMM: blocks of rows, and the few-row kernel
        original = getattr(quantize.Int8Linear, method)

        def timed_gemm(*args, _f=original, **kwargs):
            with record_function("coulisse::int8_gemm"):
                return _f(*args, **kwargs)

        setattr(quantize.Int8Linear, method, timed_gemm)


def shares(prof, wall_us: float) -> dict[str, float]:
    """Seconds per category: each event's self time to its innermost categorised ancestor (or itself)."""
    seconds: dict[str, float] = defaultdict(float)
    for event in prof.events():
        node, category = event, None
        while node is not None and category is None:
            category = CATEGORY_OF.get(node.name)
            node = node.cpu_parent
        if category is not None:
            seconds[category] += event.self_cpu_time_total / 1e6
    seconds["other/Python"] = max(0.0, wall_us / 1e6 - sum(seconds.values()))
    return seconds


def profile_mode(mode: str, model: str, texts: list[str], show_ops: bool) -> tuple[float, float, dict]:
    pipe = pipeline("sentiment-analysis", model=model, **MODES[mode])
    items = pipe.preprocess(texts)
    pipe.engine.run(items[:4])  # warm-up (and fbgemm's lazy packing of small batches)
    pipe.engine.run(items[:4])
    pipe.engine.run(items[:4])
    start = time.perf_counter()
    pipe.engine.run(items)
    plain = time.perf_counter() - start
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        pipe.engine.run(items)
        profiled = time.perf_counter() - start
    print(f"== {mode} ({pipe.preparation.describe()}): forward {plain * 1000:.0f} ms "
          f"({profiled * 1000:.0f} ms under the profiler)")
    if show_ops:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=48))
    return plain, profiled, shares(prof, profiled * 1e6)


def ab_mode(mode: str, model: str, texts: list[str], repeats: int,
            switch: str = "COULISSE_FUSE=0") -> tuple[float, float]:
    """Best forward seconds with `switch` (an environment variable, read when the layers are built) set and
    not set, runs interleaved (load changes hit both)."""
    name, _, value = switch.partition("=")
    pipes = {}
    for switched in (True, False):
        if switched:
            os.environ[name] = value
        pipes[switched] = pipeline("sentiment-analysis", model=model, **MODES[mode])
        os.environ.pop(name, None)
    items = pipes[False].preprocess(texts)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(3):  # warm-up, and fbgemm's lazy packing of small batches
        for pipe in pipes.values():
            pipe.engine.run(items[:4])
    for _ in range(repeats):
        for switched, pipe in pipes.items():
            start = time.perf_counter()
            pipe.engine.run(items)
            times[switched].append(time.perf_counter() - start)
    (a, b), (ma, mb) = ((min(times[True]), min(times[False])),
                        (statistics.median(times[True]), statistics.median(times[False])))
    print(f"== {mode}: {switch} {a:.3f} s, default {b:.3f} s (best of {repeats}): {a / b:.3f}×; "
          f"medians {ma:.3f} / {mb:.3f} s: {ma / mb:.3f}× (load {os.getloadavg()[0]:.2f})")
    return a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--modes", default="exact,int8,bf16,fast", help="comma-separated: " + ", ".join(MODES))
    parser.add_argument("--ops", action="store_true", help="also print torch's table of the top ops")
    parser.add_argument("--ab", type=int, default=0, metavar="K", help="switch on vs off, K runs each")
    parser.add_argument("--switch", default="COULISSE_FUSE=0", metavar="NAME=VALUE",
                        help="the environment variable --ab sets for its A side (default COULISSE_FUSE=0: fusions "
                             "off; e.g. COULISSE_INT8_GEMM=onednn)")
    args = parser.parse_args()
    texts, _ = load_texts(args.n)
    if args.ab:
        for mode in args.modes.split(","):
            ab_mode(mode, args.model, texts, args.ab, args.switch)
        return
    _instrument_int8()
    rows = []
    for mode in args.modes.split(","):
        rows.append((mode, *profile_mode(mode, args.model, texts, args.ops)))
    print(f"\nShares of the forward's wall time under the profiler, n={args.n}, load {os.getloadavg()[0]:.2f}:")
    print(f"{'mode':<6} {'wall s':>7} " + " ".join(f"{c:>14}" for c in COLUMNS))
    for mode, plain, profiled, seconds in rows:
        cells = " ".join(f"{100 * seconds.get(c, 0.0) / profiled:>13.1f}%" for c in COLUMNS)
        print(f"{mode:<6} {plain:>7.2f} {cells}")


if __name__ == "__main__":
    main()
