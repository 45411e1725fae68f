"""float32 values written as float32's shortest text, as TEI writes them (serde_json's Ryu): `0.1`, not float64's
`0.10000000149011612` of the same float32. Both read back as the same float32; the float32 text is 1.8x shorter
(about 11 bytes a value against 20), which is bandwidth, a client's parse time and the server's encoding time.

The trick keeps `json.dumps` (float64's shortest text, at C speed) as the writer: each float that is exactly a
float32 is replaced by the float64 nearest to float32's shortest decimal, and a decimal of at most 9 significant
digits is the shortest text of its nearest float64, so `json.dumps` writes exactly that decimal. Finding the
decimal is vectorized (numpy): the shortest one is the nearest decimal of the fewest digits that lies in the
float32's rounding interval (half-way to each neighbour, the ends included when the float32 is even, as IEEE
rounding ties go), which is Ryu's and numpy's (`np.format_float_positional(x, unique=True)`) choice too.
"""

from __future__ import annotations

import numpy as np

EXACT = 10.0 ** np.arange(23)  # powers of ten exact in float64: 10**k, k <= 22
DECADES = 10.0 ** np.arange(-15, 24)  # 10**e for e in [-15, 23]: DECADES[e + 15]


def _decimals(a: np.ndarray, lo: np.ndarray, hi: np.ndarray, even: np.ndarray, digits: np.ndarray,
              e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The decimals of `digits` significant digits next to each a > 0 (nearest first) that lie in [lo, hi]:
    the float64 nearest to the first found, and whether one was."""
    k = digits - 1 - e  # decimal places kept; negative: tens, hundreds...
    down, up = EXACT[np.maximum(k, 0)], EXACT[np.maximum(-k, 0)]  # one of the two is 1: one rounding, or none
    scaled = a * down / up
    near = np.rint(scaled)
    found = np.zeros(len(a), bool)
    best = np.zeros(len(a))
    for candidate in (near, near + np.where(near > scaled, -1.0, 1.0)):
        value = candidate / down * up  # correctly rounded: the float64 nearest to the decimal
        inside = ((value > lo) | (even & (value == lo))) & ((value < hi) | (even & (value == hi))) & ~found
        best = np.where(inside, value, best)
        found |= inside
    return best, found


def _shortest_magnitudes(a: np.ndarray) -> np.ndarray:
    """float32-exact a in [1e-14, 1e22) (every power of ten used is exact in float64): the float64 nearest to each
    one's shortest decimal, NaN where none was found (never: 9 digits always are)."""
    bits = a.astype(np.float32).view(np.uint32)
    lo = (a + (bits - 1).view(np.float32).astype(np.float64)) / 2  # half-way to each neighbour: exact (25 bits)
    hi = (a + (bits + 1).view(np.float32).astype(np.float64)) / 2
    even = bits & 1 == 0
    e = np.floor(np.log10(a)).astype(np.int64)  # a = d.ddd * 10**e, log10's rounding corrected
    e += a >= DECADES[e + 16]
    e -= a < DECADES[e + 15]
    # Digits that surely find one (the grid finer than the nearer half-gap); the shortest is usually one fewer.
    sure = np.clip(e + 1 - np.floor(np.log10(np.minimum(a - lo, hi - a))).astype(np.int64), 1, 9)
    digits = np.maximum(sure - 1, 1)
    result, first = _decimals(a, lo, hi, even, digits, e)
    result[~first] = np.nan
    todo = np.flatnonzero(~first)
    while len(todo) and digits[todo].max() < 9:  # up until found
        digits[todo] += 1
        value, found = _decimals(a[todo], lo[todo], hi[todo], even[todo], digits[todo], e[todo])
        result[todo[found]] = value[found]
        todo = todo[~found]
    todo = np.flatnonzero(first & (digits > 1))
    while len(todo):  # down while one is found
        digits[todo] -= 1
        value, found = _decimals(a[todo], lo[todo], hi[todo], even[todo], digits[todo], e[todo])
        result[todo[found]] = value[found]
        todo = todo[found & (digits[todo] > 1)]
    return result


def float32_text(values) -> np.ndarray:
    """float64 values (an array or a list of floats) -> the same, each that is exactly a float32 replaced by the
    float64 that `repr` (and `json.dumps`) writes as float32's shortest text; the others (float64 values, NaN,
    infinities, zeros) as they are."""
    x = np.asarray(values, dtype=np.float64)
    shape = x.shape
    x = x.ravel()
    out = x.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        exact = (x.astype(np.float32).astype(np.float64) == x) & (x != 0) & np.isfinite(x)
        magnitude = np.abs(x)
        normal = exact & (magnitude >= 1e-14) & (magnitude < 1e22)  # where every power of ten used is exact
        out[normal] = np.copysign(_shortest_magnitudes(magnitude[normal]), x[normal])
    rest = exact & (~normal | np.isnan(out))  # subnormals, the extremes: numpy's own shortest text, one by one
    for i in np.flatnonzero(rest):
        out[i] = float(str(np.float32(x[i])))
    return out.reshape(shape)


def with_float32_text(value):
    """A JSON-able structure (dicts, lists, scalars) with each float as `float32_text` writes it: every float
    gathered, converted at once, put back."""
    found: list[float] = []
    _gather(value, found)
    if not found:
        return value
    return _replace(value, iter(float32_text(found).tolist()))


def _gather(value, found: list[float]) -> None:
    if isinstance(value, float):
        found.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _gather(v, found)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _gather(v, found)


def _replace(value, texts):
    if isinstance(value, float):
        return next(texts)
    if isinstance(value, dict):
        return {k: _replace(v, texts) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_replace(v, texts) for v in value]
    return value
