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


def test_interleaved_passes_take_turns_and_a_broken_system_is_reported(factory, tmp_path):
    """`coulisse bench` holds the systems loaded and runs their passes in turn: each worker gets one pass
    per round and writes its own result; one that cannot load becomes an error row, not a hang."""
    import json

    from coulisse.interfaces.bench_command import load_harness

    harness = load_harness()
    texts = ["Un film superbe.", "Quel ennui, vraiment.", "Pas mal du tout."]
    model = factory.checkpoint("bert")
    id2label = json.loads((model / "config.json").read_text(encoding="utf-8"))["id2label"]
    spec = {"texts": texts, "warmup_texts": 1, "short_sentence": "Bof.", "latency_repeats": 2,
            "verify_texts": texts[:2], "total_tokens": 30, "model_dir": str(model), "id2label": id2label,
            "threads": 1, "max_batch_tokens": 64}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    good, broken = harness.run_interleaved(spec_path, [("coulisse-exact", 0), ("nope", 0)], 3, 120.0, tmp_path)
    assert "error" not in good, good
    assert good["system"] == "coulisse-exact" and len(good["pass_s"]) == 3 and good["best_pass_s"] > 0
    assert good["reviews_per_s"] == len(texts) / good["best_pass_s"] and len(good["verify_logits"]) == 2
    assert broken["system"] == "nope" and "unknown system 'nope'" in broken["error"]
