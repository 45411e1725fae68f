"""The GELU table of the C kernels (_kernels.h, GELU_TABLE), made and checked here (not a test).

    python bench/gelu_table.py            # prints the table's errors over every fp32 input (~4 minutes)
    python bench/gelu_table.py --c        # prints the table as C, to paste into _kernels.h (wrapped there)

GELU(v) = v Φ(v) = v/2 + |v| g(|v|), g(a) = Φ(a) - 1/2 = erf(a / √2) / 2. The kernels take g on 7 intervals of 0.8
from 0 to 5.6 as a polynomial of degree 6 in t = a - (the interval's center), and 1/2 from 5.6 on (1/2 - g(5.6) =
1.1e-8): an interval's index is trunc(min(a, 6) * 1.25), its coefficients picked by one permutation each (8 entries:
one AVX2 register, the same instruction on AVX-512). Coefficients: least squares at 2,000 Chebyshev points of each
interval (near minimax), rounded to fp32. Checked here on every fp32 value of |v| from 0 to 12 in the kernels' own
order of operations, fp32 FMAs emulated in float64 (a product of two fp32 values is exact there): the errors the test
bound (tests/models/test_int8_kernels.py, GELU_G_ERROR) must cover.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

WIDTH, INTERVALS, DEGREE, CLAMP = 0.8, 7, 6, 6.0


def g(a: np.ndarray) -> np.ndarray:
    return 0.5 * torch.erf(torch.from_numpy(np.asarray(a, dtype=np.float64)) / math.sqrt(2)).numpy()


def table() -> np.ndarray:
    """(DEGREE + 2, 8) fp32: the intervals' centers, then coefficients c0 .. c_DEGREE (row i + 1 multiplies t^i)."""
    rows = np.zeros((DEGREE + 2, 8))
    points = np.cos(np.pi * (np.arange(2000) + 0.5) / 2000) * WIDTH / 2
    for i in range(INTERVALS):
        center = (i + 0.5) * WIDTH
        coef, *_ = np.linalg.lstsq(np.vander(points, DEGREE + 1, increasing=True), g(points + center), rcond=None)
        rows[0, i], rows[1:, i] = center, coef
    rows[1, INTERVALS] = 0.5  # saturated: g = 1/2 exactly, center 0
    return rows.astype(np.float32)


def fma32(a, b, c):
    return (a.astype(np.float64) * b + c).astype(np.float32)


def gelu32(v: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The kernels' arithmetic on fp32 values: (GELU(v), g) as they compute them."""
    v = v.astype(np.float32)
    a = np.abs(v)
    clamped = np.minimum(a, np.float32(CLAMP))
    index = np.trunc(clamped * np.float32(1 / WIDTH)).astype(np.int64)
    x = (clamped - t[0, index]).astype(np.float32)
    p = t[DEGREE + 1, index]
    for i in range(DEGREE, 0, -1):
        p = fma32(p, x, t[i, index])
    return fma32(a, p, v * np.float32(0.5)), p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--c", action="store_true", help="print the table as C")
    t = table()
    if parser.parse_args().c:
        print(f"static const float GELU_TABLE[{DEGREE + 2}][16] __attribute__((aligned(64))) = {{")
        for row in t:
            print("    {" + ", ".join(f"{float(x)!r}f" for x in row) + "},")
        print("};")
        return
    worst = {"g": (0.0, 0.0), "tail": (0.0, 0.0), "+v": (0.0, 0.0), "-v": (0.0, 0.0)}
    top, step = int(np.float32(12.0).view(np.int32)), 1 << 22
    for start in range(0, top + 1, step):  # every fp32 value from 0 to 12, in slices
        a = np.arange(start, min(start + step, top + 1), dtype=np.int64).astype(np.int32).view(np.float32)
        _, p = gelu32(a, t)
        errors = {"g": np.abs(p - g(np.minimum(a, CLAMP))), "tail": np.abs(p - g(a))}
        for sign, v in (("+v", a), ("-v", -a)):
            o, _ = gelu32(v, t)
            exact = v.astype(np.float64) * (0.5 + np.sign(v) * g(a))
            errors[sign] = np.abs(o - exact) / np.maximum(a.astype(np.float64), 1e-38)
        for key, e in errors.items():
            if e.max() > worst[key][0]:
                worst[key] = (float(e.max()), float(a[e.argmax()]))
    print(f"every fp32 value of |v| up to 12: max |g32 - g| {worst['g'][0]:.3g} (|v| = {worst['g'][1]:.4f}), with "
          f"the saturation {worst['tail'][0]:.3g}; max |GELU error| / |v| {worst['+v'][0]:.3g} (v > 0), "
          f"{worst['-v'][0]:.3g} (v < 0, |v| = {worst['-v'][1]:.4f})")
    for i in range(INTERVALS):
        x = np.linspace(-WIDTH / 2, WIDTH / 2, 20001)
        center = (i + 0.5) * WIDTH
        fit = np.vander(x, DEGREE + 1, increasing=True) @ table()[1:, i].astype(np.float64) - g(x + center)
        print(f"  interval {i} [{i * WIDTH:.1f}, {(i + 1) * WIDTH:.1f}): fit (fp32 coefficients) "
              f"{np.abs(fit).max():.2g}")


if __name__ == "__main__":
    main()
