"""The kernels under the engine, alone (not a test): what this CPU's GEMMs reach, where fbgemm beats
oneDNN for int8, and what the fused C kernels save over PyTorch ops.

    python bench/gemm_peaks.py [--threads 2] [--peaks-only --json peaks.json]

Shapes are a base-size encoder's (hidden 768, feed-forward 3072) on ~1,000 packed tokens, the engine's
default batch. Prints GFLOP/s (fp32, bf16) and GOP/s (int8: a multiply-add counts 2), each with the kernel
the engine runs for that precision on this CPU (coulisse.engine.cpu's plan). `coulisse bench` runs
`--peaks-only` in the same run as its systems, and divides their encoder FLOP/s by these peaks.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from coulisse.models import native
from coulisse.models import quantize as Q

SHAPES = [(1024, 768, 2304), (1024, 768, 768), (1024, 768, 3072), (1024, 3072, 768)]  # (tokens, in, out)


def timeit(fn, repeats: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def int8_weights(n: int, k: int):
    q = torch.randint(-63, 64, (n, k), dtype=torch.int8)
    scale = torch.rand(n) * 0.01 + 1e-3
    return q, scale, torch.ops.onednn.qlinear_prepack(q, None), Q._fbgemm_pack(q, scale)


def onednn_int8(xq, packed, scale):
    return torch.ops.onednn.qlinear_pointwise(xq, 1.0, 128, packed, scale, torch.zeros(len(scale), dtype=torch.long),
                                              None, 1.0, 0, torch.float32, "none", [], "")


def bf16_kernel(w: torch.Tensor):
    """The engine's bf16 linear on this CPU: oneDNN with a prepacked weight where torch can pack bf16
    (AVX-512 BW/VL/DQ, AMX), else PyTorch's reference GEMM (the slow path)."""
    wb = w.bfloat16()
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        packed = torch.ops.mkldnn._reorder_linear_weight(wb, None)
        return "oneDNN packed", lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    return "torch reference", lambda x: torch.nn.functional.linear(x, wb)


def measure_peaks(repeats: int = 10, int_mm: bool = True) -> list[dict]:
    """GOP/s of each precision's kernel at each shape (a multiply-add counts 2)."""
    from coulisse.engine.cpu import detect

    vnni = detect().vnni
    rows = []
    for m, k, n in SHAPES:
        ops = 2 * m * k * n / 1e9
        x, w = torch.randn(m, k), torch.randn(n, k) * 0.05
        packed_fp32 = torch.ops.mkldnn._reorder_linear_weight(w, None)
        q, scale, packed, fb = int8_weights(n, k)
        xq = torch.randint(0, 256, (m, k), dtype=torch.uint8)
        name, bf16 = bf16_kernel(w)
        xb = x.bfloat16()
        row = {
            "shape": [m, k, n],
            "fp32_mkl": ops / timeit(lambda: torch.nn.functional.linear(x, w), repeats),  # noqa: B023
            "fp32": ops / timeit(lambda: torch.ops.mkldnn._linear_pointwise(x, packed_fp32, None, "none", [], ""),  # noqa: B023
                                 repeats),
            "bf16": ops / timeit(lambda: bf16(xb), max(2, repeats // 4), 1),  # noqa: B023
            "bf16_kernel": name,
            "int8": ops / timeit(lambda: onednn_int8(xq, packed, scale), repeats),  # noqa: B023
            "int8_fbgemm": ops / timeit(lambda: torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(  # noqa: B023
                x, 1.0, 128, fb), repeats),  # noqa: B023
        }
        if hasattr(Q.kernels(), "int8_gemm") and Q.small_gemm_available(k, n, True):
            own, out = Q._small_pack(q, scale), torch.empty(m, n)  # coulisse's GEMM (AVX512-VNNI), its product
            row["int8_coulisse"] = ops / timeit(lambda: Q.kernels().int8_gemm(  # noqa: B023
                xq.data_ptr(), *(t.data_ptr() for t in own), out.data_ptr(), m, k, n,  # noqa: B023
                torch.get_num_threads(), 0, 0, 0, False, 0, 0, 0, 0.0, 0, 0), repeats)
        if int_mm:  # s8 x s8 -> s32: a reference loop without VNNI (~1 GOP/s), so timed on 64 rows there
            rows_mm = m if vnni else 64
            xs, ws = torch.randint(-127, 128, (rows_mm, k), dtype=torch.int8), q.T.contiguous()
            row["int8_int_mm"] = (2 * rows_mm * k * n / 1e9) / timeit(lambda: torch._int_mm(xs, ws), 2, 1)  # noqa: B023
        rows.append(row)
    return rows


def peak_summary(rows: list[dict]) -> dict:
    """Per precision, the best rate over the model's shapes: the machine's GEMM peak for that precision."""
    keys = [k for k in rows[0] if k not in ("shape", "bf16_kernel")]
    return {k: max(r[k] for r in rows) for k in keys} | {"bf16_kernel": rows[0]["bf16_kernel"]}


def gemm_peaks(rows: list[dict]) -> None:
    print("GEMM rates, GOP/s (tokens, in, out):")
    keys = [k for k in rows[0] if k not in ("shape", "bf16_kernel")]
    print(f"  {'shape':<20} " + " ".join(f"{k:>12}" for k in keys) + f"   (bf16: {rows[0]['bf16_kernel']})")
    for r in rows:
        print(f"  {str(tuple(r['shape'])):<20} " + " ".join(f"{r[k]:>12.1f}" for k in keys))


def crossover() -> None:
    print(f"int8 768 -> 3072 by rows: oneDNN vs fbgemm, ms (SMALL_BATCH_ROWS = {Q.SMALL_BATCH_ROWS})")
    q, scale, packed, fb = int8_weights(3072, 768)
    for m in (1, 8, 16, 32, 64, 96, 128, 256):
        xq, x = torch.randint(0, 256, (m, 768), dtype=torch.uint8), torch.randn(m, 768)
        a = timeit(lambda: onednn_int8(xq, packed, scale), 50)  # noqa: B023
        b = timeit(lambda: torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(x, 1.0, 128, fb), 50)  # noqa: B023
        print(f"  {m:>4} rows: oneDNN {a * 1e3:6.3f}  fbgemm {b * 1e3:6.3f}  ({a / b:.2f}x)")


def fused_kernels() -> None:
    kernels = Q.kernels()
    if kernels is None:
        print("C kernels not built: nothing to compare")
        return
    print(f"per-token (de)quantization, ms: C kernels ({kernels.isa()}) vs PyTorch ops")
    for rows, cols in ((1024, 768), (1024, 3072)):
        x, bias, scale = torch.randn(rows, cols), torch.randn(cols), torch.rand(rows, 1)
        y = x.clone()  # dequantized in place, over and over (the values stay finite: scales < 1)
        for name, fn in (("quantize", lambda: Q.quantize_rows(x)),  # noqa: B023
                         ("dequantize", lambda: Q.dequantize_rows(y, scale, bias, False)),  # noqa: B023
                         ("dequantize+GELU", lambda: Q.dequantize_rows(y, scale, bias, True))):  # noqa: B023
            fast = timeit(fn, 50)
            saved, native._KERNELS = native._KERNELS, False
            slow = timeit(fn, 50)
            native._KERNELS = saved
            print(f"  {name:<16} {rows}x{cols}: C {fast * 1e3:6.3f}  torch {slow * 1e3:6.3f}  ({slow / fast:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--peaks-only", action="store_true", help="only the GEMM rates (what coulisse bench runs)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rates and the plan to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # torch's deprecation notices for its quantized tensor types
    from coulisse.engine.cpu import this_machine

    plan = this_machine()
    print(f"torch {torch.__version__}, {args.threads} threads")
    print("\n".join(plan.lines()))
    rows = measure_peaks(args.repeats)
    gemm_peaks(rows)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "peaks": peak_summary(rows), "threads": args.threads,
                                         "plan": plan.lines(), "flags": plan.features.describe()}), encoding="utf-8")
    if not args.peaks_only:
        crossover()
        fused_kernels()


if __name__ == "__main__":
    main()
