"""Counts, durations and probabilities as the CLI writes them."""

from __future__ import annotations

from coulisse.interfaces.formatting import count, duration, probability


def test_count_agrees_with_its_number():
    assert [count(n, "row") for n in (0, 1, 2, 1024)] == ["0 rows", "1 row", "2 rows", "1,024 rows"]
    assert count(1, "entity", "entities") == "1 entity" and count(3, "entity", "entities") == "3 entities"


def test_duration_keeps_small_times_readable():
    assert [duration(s) for s in (0.0, 0.000512, 0.0423, 4.2149, 42.26)] == \
        ["0 s", "0.000512 s", "0.0423 s", "4.21 s", "42.3 s"]
    assert duration(125.4) == "2 min 05 s" and duration(7384) == "2 h 03 min"


def test_probability_keeps_four_significant_digits():
    assert [probability(p) for p in (0.87314, 3.1234e-05, 1.0)] == ["0.8731", "3.123e-05", "1"]
