"""fp32 GEMMs per machine: oneDNN with prepacked weights, or MKL's sgemm (PyTorch's `F.linear`), measured.

Neither wins everywhere. On a 2-core AMD EPYC Zen 3 VM (2026-11-26) oneDNN's prepacked matmul ran the
encoder's shapes at 132-147 GFLOP/s against MKL's 108-138; on another VM of the same model name
(2026-12-03), MKL reached 172-183 at 1,024 rows against oneDNN's 153-160, and a whole exact forward ran
1.14x faster on MKL (docs/benchmarks.md). At a few rows oneDNN wins everywhere (2x at 8 rows: MKL repacks
the weight on every call). A rule on the CPU's name cannot tell those VMs apart, so the choice is measured:
once per machine, model shape and thread count, at the engine's default batch budget (the corpus jobs'
batches), and kept in the cache folder (`coulisse.engine.cache.cache_dir`; safe to delete). MKL is taken
only where it is at least `1 / MARGIN` faster. Both are exact fp32 (results within rounding, ≤ 2e-6).

`COULISSE_ONEDNN=1` keeps oneDNN without measuring (latency-bound servers on a machine where MKL wins at
large batches: oneDNN stays 2x faster for short requests); `COULISSE_ONEDNN=0` keeps MKL (the kernel plan).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from coulisse.engine.cpu import cpu_name

log = logging.getLogger(__name__)

ROWS = 1024  # the engine's default token budget per batch (coulisse.engine.engine.DEFAULT_BATCH_TOKENS)
MARGIN = 0.9  # MKL must take at most 90 % of oneDNN's time: within that, timing noise could flip the choice
MIN_HIDDEN = 256  # below this the GEMMs are too small to matter: oneDNN, nothing measured
REPEATS = 3


@dataclass(frozen=True)
class Fp32Gemm:
    kernel: str  # "onednn" or "mkl"
    why: str


def decide(onednn_s: float, mkl_s: float) -> str:
    """The kernel for measured times of the same work: MKL only when clearly faster."""
    return "mkl" if mkl_s <= MARGIN * onednn_s else "onednn"


def measure(hidden: int, intermediate: int, rows: int = ROWS, repeats: int = REPEATS) -> tuple[float, float]:
    """Seconds for a feed-forward's two GEMMs (hidden -> intermediate -> hidden) at `rows` tokens on the
    current threads: `(oneDNN prepacked, MKL)`, best of `repeats`, the two interleaved."""
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(intermediate, hidden, generator=generator),
               torch.randn(hidden, intermediate, generator=generator)]
    biases = [torch.zeros(intermediate), torch.zeros(hidden)]
    packed = [torch.ops.mkldnn._reorder_linear_weight(w, None) for w in weights]
    inputs = [torch.randn(rows, hidden, generator=generator), torch.randn(rows, intermediate, generator=generator)]

    def onednn():
        for x, w, b in zip(inputs, packed, biases, strict=True):
            torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")

    def mkl():
        for x, w, b in zip(inputs, weights, biases, strict=True):
            torch.nn.functional.linear(x, w, b)

    best = {onednn: float("inf"), mkl: float("inf")}
    with torch.inference_mode():
        onednn(), mkl()  # first calls: oneDNN's primitive creation, MKL's buffers
        for _ in range(repeats):
            for run in (onednn, mkl):
                start = time.perf_counter()
                run()
                best[run] = min(best[run], time.perf_counter() - start)
    return best[onednn], best[mkl]


def fp32_gemm(hidden: int, intermediate: int, features_key: str) -> Fp32Gemm:
    """oneDNN or MKL for a model of these sizes on this machine, from the cache or measured now."""
    if os.environ.get("COULISSE_ONEDNN") == "1":
        return Fp32Gemm("onednn", "COULISSE_ONEDNN=1")
    if hidden < MIN_HIDDEN:
        return Fp32Gemm("onednn", f"hidden size {hidden} < {MIN_HIDDEN}: not measured")
    threads = torch.get_num_threads()
    fields = {"cpu": cpu_name(), "features": features_key, "torch": torch.__version__, "threads": threads,
              "hidden": hidden, "intermediate": intermediate, "rows": ROWS}
    path = _cache_path(fields)
    times = _read(path, fields) if path is not None else None
    source = f"cached in {path}"
    if times is None:
        times = measure(hidden, intermediate)
        source = "measured now" + (f", cached in {path}" if path is not None and _write(path, fields, times) else "")
    onednn_s, mkl_s = times
    kernel = decide(onednn_s, mkl_s)
    why = (f"{hidden}->{intermediate}->{hidden} at {ROWS} rows, {threads} thread{'s' * (threads > 1)}: "
           f"oneDNN {onednn_s * 1e3:.1f} ms, "
           f"MKL {mkl_s * 1e3:.1f} ms ({source})")
    log.info("fp32 GEMMs: %s (%s)", kernel, why)
    return Fp32Gemm(kernel, why)


@dataclass(frozen=True)
class CachedChoice:
    """One measurement the cache holds for this machine, torch, coulisse and thread count."""

    hidden: int
    intermediate: int
    onednn_s: float
    mkl_s: float
    path: Path

    @property
    def kernel(self) -> str:
        return decide(self.onednn_s, self.mkl_s)

    def describe(self) -> str:
        name = "MKL's sgemm" if self.kernel == "mkl" else "oneDNN (prepacked)"
        return (f"{self.hidden}->{self.intermediate}->{self.hidden}: {name} (oneDNN {self.onednn_s * 1e3:.1f} ms, "
                f"MKL {self.mkl_s * 1e3:.1f} ms at {ROWS} rows; MKL only where it takes ≤ {MARGIN:.0%} of oneDNN's "
                "time)")


def cached_choices(features_key: str) -> list[CachedChoice]:
    """The model sizes already measured on this machine (same CPU, features, torch, coulisse version and
    threads as now), from the cache folder: what corpus jobs will run without measuring again."""
    from coulisse.engine import cache

    folder = cache.cache_dir()
    if folder is None:
        return []
    here = {"cpu": cpu_name(), "features": features_key, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "rows": ROWS}
    found = []
    for path in sorted((folder / "kernels").glob("fp32-*.json")):
        try:
            fields = json.loads(path.read_text(encoding="utf-8")).get("fields")
        except (OSError, ValueError, AttributeError):
            continue
        if not isinstance(fields, dict) or any(fields.get(k) != v for k, v in here.items()):
            continue
        # The file name carries the coulisse version: a file another version wrote is not this one's.
        times = _read(path, fields) if _cache_path(fields) == path else None
        if times is not None:
            found.append(CachedChoice(int(fields["hidden"]), int(fields["intermediate"]), *times, path))
    return found


def _cache_path(fields: dict) -> Path | None:
    from coulisse.engine import cache

    folder = cache.cache_dir()
    if folder is None:
        return None
    digest = hashlib.sha256(json.dumps({**fields, "coulisse": cache.version()}, sort_keys=True).encode()).hexdigest()
    return folder / "kernels" / f"fp32-{digest[:32]}.json"


def _read(path: Path, fields: dict) -> tuple[float, float] | None:
    """The cached times when the file is there, readable and for exactly these fields; else None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("fields") != fields:
            return None
        onednn_s, mkl_s = float(data["onednn_s"]), float(data["mkl_s"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return (onednn_s, mkl_s) if onednn_s > 0 and mkl_s > 0 else None


def _write(path: Path, fields: dict, times: tuple[float, float]) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps({"fields": fields, "onednn_s": times[0], "mkl_s": times[1]}), encoding="utf-8")
        os.replace(partial, path)
        return True
    except OSError as error:
        log.warning("could not cache the fp32 GEMM measurement in %s (%s): every job measures again; set "
                    "COULISSE_CACHE to a writable folder (or 0 to turn the cache off)", path, error)
        return False
