"""The JSON of a large /embed_all answer: `answers.encode_json` (float32's shortest text, float_text.py) against
the same pieces written as float64's shortest text of each float32 (`tolist()`, what the server wrote before)
and Starlette's `JSONResponse` (one `json.dumps`), in one process, alternating, best of `--repeats` (not a test).

    python bench/answer_encoding.py [--inputs 8] [--tokens 256] [--hidden 384] [--repeats 5]

The answer is what /embed_all returns for `--inputs` texts of `--tokens` tokens through a model of `--hidden`
dimensions (all-MiniLM-L6-v2: 384): one float32 array (tokens, hidden) per input, values of a unit-scale
hidden state. Prints seconds to encode, bytes, and `json.loads` seconds of each text (a client's parse).
"""

from __future__ import annotations

import argparse
import json
import time
from unittest.mock import patch

import numpy as np
from starlette.responses import JSONResponse

from coulisse.interfaces.server import answers
from coulisse.interfaces.server.answers import encode_json


def float64_pieces(value) -> bytes:
    """`encode_json` as it was: the same pieces, each float32 widened to float64 by `tolist()`."""
    with patch.object(answers, "_listed", lambda v: v.tolist() if isinstance(v, np.ndarray) else v):
        return encode_json(value)


def best(work, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = work()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    answer = [rng.standard_normal((args.tokens, args.hidden)).astype(np.float32) for _ in range(args.inputs)]
    values = args.inputs * args.tokens * args.hidden
    rows = {}
    for _ in range(2):  # alternate, so that a neighbour's load falls on both
        rows["float64 text, one json.dumps"] = best(lambda: JSONResponse([a.tolist() for a in answer]).body,
                                                    args.repeats)
        rows["float64 text, pieces (before)"] = best(lambda: float64_pieces(answer), args.repeats)
        rows["float32 text, pieces (now)"] = best(lambda: encode_json(answer), args.repeats)
    print(f"/embed_all answer: {args.inputs} inputs x {args.tokens} tokens x {args.hidden} = {values:,} float32 values")
    for name, (seconds, body) in rows.items():
        parse, _ = best(lambda body=body: json.loads(body), args.repeats)
        print(f"  {name:30s} encode {seconds:6.3f} s  {len(body) / 1e6:7.2f} MB  {len(body) / values:5.2f} B/value  "
              f"client json.loads {parse:6.3f} s")
    _, (old, old_body), (new, new_body) = rows.values()
    assert json.loads(old_body) == [a.tolist() for a in answer]
    assert all((np.asarray(got, np.float32) == a).all() for got, a in zip(json.loads(new_body), answer, strict=True))
    print(f"  now/before: encode time {new / old:.2f}, size {len(new_body) / len(old_body):.2f}")


if __name__ == "__main__":
    main()
