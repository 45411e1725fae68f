"""bench/server_load.py runs end to end (a tiny model, a few requests): the server starts, both settings
answer every request, the table lands in the given docs file, the server stops with 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "bench" / "server_load.py"


def test_server_load_bench_runs(tf_camembert_dir, tmp_path):
    reviews = tmp_path / "reviews.csv"
    reviews.write_text('text,label\n"Super film. Les acteurs sont bons.",1\n"Quel ennui ! Je suis parti.",0\n',
                       encoding="utf-8")
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Other\n\nkept\n", encoding="utf-8")
    run = subprocess.run([sys.executable, str(BENCH), "--model", str(tf_camembert_dir), "--csv", str(reviews),
                          "--clients", "4", "--requests", "12", "--seconds", "20", "--docs", str(docs)],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "first sentences of reviews.csv" in run.stdout
    rows = [line for line in run.stdout.splitlines() if line.startswith(("| sequential", "| 4 clients"))]
    assert [row.split("|")[2:5] for row in rows] == [[" 12 ", " 12 ", " 0 "]] * 2  # requests, 200, failed
    written = docs.read_text(encoding="utf-8")
    assert "## Other\n\nkept" in written and "bench/server_load.py" in written and "4 clients:" in written
