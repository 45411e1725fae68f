"""Counts, durations and probabilities as the CLI writes them."""

from __future__ import annotations

from coulisse.interfaces.formatting import count, duration, one_line, printable, probability


def test_count_agrees_with_its_number():
    assert [count(n, "row") for n in (0, 1, 2, 1024)] == ["0 rows", "1 row", "2 rows", "1,024 rows"]
    assert count(1, "entity", "entities") == "1 entity" and count(3, "entity", "entities") == "3 entities"


def test_duration_keeps_small_times_readable():
    assert [duration(s) for s in (0.0, 0.000512, 0.0423, 4.2149, 42.26)] == \
        ["0 s", "0.000512 s", "0.0423 s", "4.21 s", "42.3 s"]
    assert duration(125.4) == "2 min 05 s" and duration(7384) == "2 h 03 min"


def test_probability_keeps_four_significant_digits():
    assert [probability(p) for p in (0.87314, 3.1234e-05, 1.0)] == ["0.8731", "3.123e-05", "1"]


def test_printable_escapes_what_would_forge_a_line_or_drive_the_terminal():
    assert printable("NEG\nFAKE 1.0") == "NEG\\nFAKE 1.0"
    assert printable("POS\x1b[31mred") == "POS\\x1b[31mred"
    assert printable("a\u2028b\x85c") == "a\\u2028b\\x85c"
    assert printable("POS\u202eEVITAGEN\u2066x\u200f") == "POS\\u202eEVITAGEN\\u2066x\\u200f"
    # accents, emoji and their joiners are text, not controls
    assert printable("Amélie 👩\u200d👩\u200d👧 «ok»") == "Amélie 👩\u200d👩\u200d👧 «ok»"


def test_one_line_collapses_whitespace_escapes_controls_and_cuts():
    assert one_line("Super\nPOSITIVE 1.0000\tfake\x1b[2J") == "Super POSITIVE 1.0000 fake\\x1b[2J"
    assert one_line("mot " * 30, 20) == "mot mot mot mot m..." and len(one_line("a " * 40)) == 60
