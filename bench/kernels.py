"""The kernels under the engine, alone (not a test): what this CPU's GEMMs reach, where fbgemm beats
oneDNN for int8, and what the fused C kernels save over PyTorch ops.

    python bench/kernels.py [--threads 2]

Shapes are a base-size encoder's (hidden 768, feed-forward 3072) on ~1,000 packed tokens, the engine's
default batch. Prints GFLOP/s (fp32) and GOP/s (int8: a multiply-add counts 2); docs/benchmarks.md uses
these figures to say how far the engine is from the machine's limits.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from coulisse.models import quantize as Q

SHAPES = [(1024, 768, 2304), (1024, 768, 768), (1024, 768, 3072), (1024, 3072, 768)]  # (tokens, in, out)


def timeit(fn, repeats: int = 20) -> float:
    for _ in range(3):
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


def gemm_peaks() -> None:
    print("GEMM rates (tokens, in, out):")
    print(f"  {'shape':<20} {'fp32 MKL':>10} {'fp32 oneDNN':>12} {'int8 oneDNN':>12} {'int8 fbgemm':>12}")
    for m, k, n in SHAPES:
        ops = 2 * m * k * n / 1e9
        x, w = torch.randn(m, k), torch.randn(n, k) * 0.05
        packed_fp32 = torch.ops.mkldnn._reorder_linear_weight(w, None)
        q, scale, packed, fb = int8_weights(n, k)
        xq = torch.randint(0, 256, (m, k), dtype=torch.uint8)
        rates = [
            ops / timeit(lambda: torch.nn.functional.linear(x, w)),  # noqa: B023
            ops / timeit(lambda: torch.ops.mkldnn._linear_pointwise(x, packed_fp32, None, "none", [], "")),  # noqa: B023
            ops / timeit(lambda: onednn_int8(xq, packed, scale)),  # noqa: B023
            ops / timeit(lambda: torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(  # noqa: B023
                x, 1.0, 128, fb)),  # noqa: B023
        ]
        print(f"  {str((m, k, n)):<20} " + " ".join(f"{r:>11.0f} " for r in rates))


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
            saved, Q._KERNELS = Q._KERNELS, False
            slow = timeit(fn, 50)
            Q._KERNELS = saved
            print(f"  {name:<16} {rows}x{cols}: C {fast * 1e3:6.3f}  torch {slow * 1e3:6.3f}  ({slow / fast:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # torch's deprecation notices for its quantized tensor types
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"torch {torch.__version__}, {args.threads} threads, CPU capability {capability}")
    gemm_peaks()
    crossover()
    fused_kernels()


if __name__ == "__main__":
    main()
