"""coulisse's int8 GEMMs against oneDNN's, alone (not a test): the product, the product with the row passes
that finish a layer, and the 48 GEMMs of a base-size forward at a few rows.

    python bench/int8_gemms.py [--threads 2] [--rows 1024,256,100] [--few 1,8,16,32,48,64] [--repeats 20]

Needs AVX512-VNNI (the kernels' `has_int8_dot`). Per shape of a base-size encoder (hidden 768, feed-forward
3,072) and row count: oneDNN's `qlinear_pointwise` then the C row pass the engine runs after it (dequantize
+ bias, GELU and the next layer's codes, or residual + LayerNorm and codes), against `int8_gemm` doing both
in one call, and the products alone (oneDNN's, `int8_gemm` with nothing to finish); the systems alternate, fresh
outputs each call as in the engine; best and median ms. With AMX-INT8, `int8_gemm` runs on tiles
(`COULISSE_INT8_AMX=0`: on AVX512-VNNI). Then
`--few`: the 48 weight matrices of a 12-layer model in turn (85 MB of codes: read from memory, as in a
forward), per row count, oneDNN / `small_gemm` (the few-row kernel) / `int8_gemm`, the product only.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from coulisse.models import quantize as Q

# (in, out, what finishes the layer): q/k/v (dequantize), attention output and feed-forward output
# (residual + LayerNorm + codes), feed-forward input (GELU + codes)
SHAPES = [(768, 2304, "dequantize"), (768, 768, "add+norm"), (768, 3072, "gelu"), (3072, 768, "add+norm")]


def timed(fns: dict, repeats: int) -> dict:
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: (min(t), statistics.median(t)) for name, t in times.items()}


def layer_case(m: int, k: int, n: int, finish: str, generator) -> dict:
    q, scale = Q.quantize_weight(torch.randn(n, k, generator=generator), 127)
    packed, zeros = torch.ops.onednn.qlinear_prepack(q, None), torch.zeros(n, dtype=torch.long)
    own = Q._small_pack(q, scale)
    xq, x_scale = Q.quantize_rows(torch.randn(m, k, generator=generator))
    bias, residual = torch.randn(n, generator=generator), torch.randn(m, n, generator=generator)
    norm = torch.nn.LayerNorm(n)
    op, gelu, codes = {"dequantize": (1, False, False), "gelu": (1, True, True), "add+norm": (2, False, True)}[finish]

    def onednn():
        out = torch.ops.onednn.qlinear_pointwise(xq, 1.0, 128, packed, scale, zeros, None, 1.0, 0, torch.float32,
                                                 "none", [], "")
        if op == 2:
            return Q.add_norm_rows(out, x_scale, bias, residual, norm, codes=True)
        return Q.dequantize_rows(out, x_scale, bias, gelu, codes=codes)

    def coulisse():
        out = torch.empty(m, n)
        cq, cs = (torch.empty(m, n, dtype=torch.uint8), torch.empty(m, 1)) if codes else (None, None)
        ptr = lambda t: 0 if t is None else t.data_ptr()  # noqa: E731
        Q.kernels().int8_gemm(xq.data_ptr(), *(t.data_ptr() for t in own), out.data_ptr(), m, k, n,
                              torch.get_num_threads(), op, x_scale.data_ptr(), bias.data_ptr(), gelu,
                              ptr(residual if op == 2 else None), ptr(norm.weight if op == 2 else None),
                              ptr(norm.bias if op == 2 else None), norm.eps, ptr(cq), ptr(cs))
        return out

    def onednn_product():
        return torch.ops.onednn.qlinear_pointwise(xq, 1.0, 128, packed, scale, zeros, None, 1.0, 0, torch.float32,
                                                  "none", [], "")

    def coulisse_product():
        out = torch.empty(m, n)
        Q.kernels().int8_gemm(xq.data_ptr(), *(t.data_ptr() for t in own), out.data_ptr(), m, k, n,
                              torch.get_num_threads(), 0, 0, 0, False, 0, 0, 0, 0.0, 0, 0)
        return out

    same = torch.equal(onednn(), coulisse())
    return {"same": same, **timed({"oneDNN + pass": onednn, "coulisse, one call": coulisse,
                                   "oneDNN product": onednn_product, "coulisse product": coulisse_product},
                                  ARGS.repeats)}


def few_rows(rows: list[int], generator) -> None:
    layers = []
    for _ in range(12):
        for k, n, _ in SHAPES:
            q, scale = Q.quantize_weight(torch.randn(n, k, generator=generator), 127)
            layers.append((k, n, torch.ops.onednn.qlinear_prepack(q, None), scale, Q._small_pack(q, scale)))
    zeros = {n: torch.zeros(n, dtype=torch.long) for n in (768, 2304, 3072)}
    threads = torch.get_num_threads()
    print(f"\n48 GEMMs of a 12-layer base model in turn, the product only, ms (best / median of {ARGS.repeats}):")
    for m in rows:
        xs = {k: torch.randint(0, 256, (m, k), dtype=torch.uint8, generator=generator) for k in (768, 3072)}

        def onednn():
            for k, n, packed, scale, _ in layers:  # noqa: B023
                torch.ops.onednn.qlinear_pointwise(xs[k], 1.0, 128, packed, scale, zeros[n], None, 1.0, 0,  # noqa: B023
                                                   torch.float32, "none", [], "")

        def kernel(name):
            def run():
                for k, n, _, _, own in layers:
                    out = torch.empty(m, n)  # noqa: B023
                    args = (xs[k].data_ptr(), *(t.data_ptr() for t in own), out.data_ptr(), m, k, n, threads)  # noqa: B023
                    if name == "small_gemm":
                        Q.kernels().small_gemm(*args)
                    else:
                        Q.kernels().int8_gemm(*args, 0, 0, 0, False, 0, 0, 0, 0.0, 0, 0)
            return run

        result = timed({"oneDNN": onednn, "small_gemm": kernel("small_gemm"), "int8_gemm": kernel("int8_gemm")},
                       max(3, ARGS.repeats // 2))
        print(f"  {m:>5} rows: " + "   ".join(f"{name} {b * 1e3:6.2f} / {md * 1e3:6.2f}"
                                              for name, (b, md) in result.items()))


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", default="1024,256,100")
    parser.add_argument("--few", default="1,8,16,32,48,64")
    parser.add_argument("--repeats", type=int, default=20)
    ARGS = parser.parse_args()
    if not getattr(Q.kernels(), "has_int8_dot", lambda: False)():
        raise SystemExit("this CPU has no AVX512-VNNI (or the C kernels are not built): nothing to measure")
    torch.set_num_threads(ARGS.threads)
    generator = torch.Generator().manual_seed(0)
    print(f"{ARGS.threads} threads; ms best / median of {ARGS.repeats}, the two alternating")
    for m in (int(v) for v in ARGS.rows.split(",") if v):
        for k, n, finish in SHAPES:
            r = layer_case(m, k, n, finish, generator)
            (a, ma), (b, mb) = r["oneDNN + pass"], r["coulisse, one call"]
            gop = 2 * m * k * n / 1e9
            print(f"  {m:>5} x {k:>4} -> {n:>4} + {finish:<10}: oneDNN + pass {a * 1e3:7.3f} / {ma * 1e3:7.3f}   "
                  f"one call {b * 1e3:7.3f} / {mb * 1e3:7.3f}   {a / b:.2f}× best, {ma / mb:.2f}× median   "
                  f"({gop / b:.0f} GOP/s; same bits: {r['same']})")
            (c, mc), (d, md) = r["oneDNN product"], r["coulisse product"]
            print(f"  {'':>5}   the product alone       : oneDNN        {c * 1e3:7.3f} / {mc * 1e3:7.3f}   "
                  f"coulisse {d * 1e3:7.3f} / {md * 1e3:7.3f}   {c / d:.2f}× best, {mc / md:.2f}× median   "
                  f"({gop / d:.0f} vs {gop / c:.0f} GOP/s)")
    if ARGS.few:
        few_rows([int(v) for v in ARGS.few.split(",")], generator)


ARGS: argparse.Namespace

if __name__ == "__main__":
    main()
