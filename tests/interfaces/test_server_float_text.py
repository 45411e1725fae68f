"""Answers write each float32 as float32's shortest text, as TEI does (serde_json's Ryu): checked against numpy's
own shortest float32 text (`np.format_float_positional(x, unique=True)`, Dragon4: another algorithm than
float_text.py's), value by value, on random bit patterns of every magnitude, on model-like values and on the
edges (subnormals, the largest float32, integers past 2**24, the ends of the vectorized range); and every value
read back as a float32 is the same float32, sign of zero included."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import numpy as np
import pytest

from coulisse.interfaces.server.answers import encode_json
from coulisse.interfaces.server.float_text import float32_text, with_float32_text

EDGES = np.array([
    1e-45, -1e-45, 3e-45, 1.1754942e-38, 1.17549435e-38, 3.4028235e38, -3.4028235e38, 0.0, -0.0, 0.1, -0.1, 0.3,
    1, 2, 10, 100, 1e7, 1e8, 1e10, 123456789, 16777216, 16777217, 16777218, 33554436, 2**-30, 2**40, 0.5, 1.5,
    1e-14, 9.999999e-15, 1.0000001e-14, 1e-15, 1e21, 9.999999e21, 1e22, 1.0000001e22, 1e23, 5e-324, 65504, 1e-7,
    8.6632096e30, 64311768, 4.4623648e7, 0.33333334, 2.7182817, 3.1415927,
], dtype=np.float32)


def oracle(value: np.float32) -> Decimal:
    return Decimal(np.format_float_positional(value, unique=True))


def check(values: np.ndarray, texts: list[str]) -> None:
    """Each text: numpy's shortest decimal of the float32, read back as that float32 (bits, so -0.0 too)."""
    assert len(texts) == len(values)
    wrong = [(v, t) for v, t in zip(values, texts, strict=True) if Decimal(t) != oracle(v)]
    assert not wrong, wrong[:10]
    back = np.array([float(t) for t in texts]).astype(np.float32)
    assert (back.view(np.uint32) == values.view(np.uint32)).all()


def random_values() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(38)
    bits = rng.integers(0, 2**32, 120_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    return {"every bit pattern": bits[np.isfinite(bits)],
            "hidden states": rng.standard_normal(60_000).astype(np.float32),
            "unit vector values": (rng.standard_normal(60_000) / 30).astype(np.float32),
            "probabilities": rng.random(30_000).astype(np.float32),
            "integers": rng.integers(-2**26, 2**26, 20_000).astype(np.float32),
            "edges": EDGES}


@pytest.mark.parametrize("name", list(random_values()))
def test_each_value_is_numpy_shortest_float32_text(name):
    values = random_values()[name]
    check(values, [repr(x) for x in float32_text(values.astype(np.float64)).tolist()])


def test_the_json_of_an_answer_holds_those_texts():
    """Through the encoder: a /embed_all-like answer (float32 rows, several blocks and pieces), a list of
    Python floats that are float32 values (what `tolist()` gives), floats inside dicts (scores)."""
    values = random_values()
    rows = values["hidden states"][:40_000].reshape(-1, 100)
    body = encode_json([rows, rows[:3]]).decode()
    check(np.concatenate([rows.ravel(), rows[:3].ravel()]), re.findall(r"[-0-9.e+]+", body))
    edges = values["edges"]
    check(edges, encode_json(edges.tolist()).decode()[1:-1].split(","))
    scores = [{"label": "POSITIVE", "score": float(np.float32(0.1))}, {"label": "N", "score": float(edges[0])}]
    assert encode_json(scores) == b'[{"label":"POSITIVE","score":0.1},{"label":"N","score":1e-45}]'
    assert encode_json({"data": [{"embedding": [float(np.float32(0.3))]}]}) == b'{"data":[{"embedding":[0.3]}]}'


def test_what_is_not_a_float32_is_written_as_before():
    """A float64 that no float32 equals keeps float64's text; integers stay integers; NaN is refused as before
    (Starlette's JSONResponse refuses it too)."""
    assert encode_json([0.1, 1 / 3, 1e300, 3, True, None]) == b"[0.1,0.3333333333333333,1e+300,3,true,null]"
    assert encode_json({"ids": [1, 2], "x": 0.1}) == b'{"ids":[1,2],"x":0.1}'
    assert with_float32_text({"a": ["x", 2, (0.5, 0.1)]}) == {"a": ["x", 2, [0.5, 0.1]]}
    for bad in ([float("nan")], np.array([[np.inf]], dtype=np.float32), {"score": float("nan")}):
        with pytest.raises(ValueError):
            encode_json(bad)


def test_answers_are_shorter_than_float64_text():
    """What the change is for: TEI's size (float32's text), about 0.56 of float64's for hidden-state values."""
    rows = np.random.default_rng(0).standard_normal((256, 384)).astype(np.float32)
    ours, widened = len(encode_json([rows])), len(json.dumps([rows.tolist()], separators=(",", ":")))
    assert ours < 0.6 * widened, (ours, widened)
