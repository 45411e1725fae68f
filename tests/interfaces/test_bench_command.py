"""`coulisse bench --help` speaks to a user: what is measured and how, with examples."""

from __future__ import annotations

import re

from click.testing import CliRunner

from coulisse.interfaces.cli import cli


def test_bench_help_describes_the_command():
    result = CliRunner().invoke(cli, ["bench", "--help"])
    assert result.exit_code == 0, result.output
    assert not re.search(r"issue|#\d", result.stdout, re.I), result.stdout  # project history, not help
    for words in ("transformers", "ONNX Runtime", "peak RSS", "targets", "Examples:"):
        assert words in result.stdout, words


def test_bench_without_the_harness_says_where_to_get_it(monkeypatch, tmp_path):
    """What an installed wheel (no bench/ folder) answers: one line, no traceback (tests/test_packaging.py
    runs it from a real wheel)."""
    from coulisse.interfaces import bench_command

    monkeypatch.setattr(bench_command, "bench_dir", lambda: tmp_path / "bench")
    result = CliRunner().invoke(cli, ["bench", "--n", "1"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert "source checkout" in lines[0] and "pip install -e '.[bench]'" in lines[0], lines[0]
