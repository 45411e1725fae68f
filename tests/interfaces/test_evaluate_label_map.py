"""--label-map given hostile values: a digit Python's int() refuses, and thousands of keys that match nothing
(the refusal names a few and counts the rest, and looks for near misses of those few only)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest

from coulisse.errors import InputError
from coulisse.interfaces.jobs import evaluate
from coulisse.interfaces.jobs.evaluate import LabelMap, parse_label_map, unused_keys_message


@pytest.mark.parametrize("name", ["²", "١", "5"])  # a superscript and an Arabic-Indic digit: isdigit(), not ASCII
def test_a_label_map_target_that_is_no_ascii_id_is_refused_in_one_line(name):
    with pytest.raises(InputError, match=rf"^--label-map positif={name}: the model has no label '{name}'; it knows "):
        LabelMap({0: "NEGATIVE", 1: "POSITIVE"}, parse_label_map(f"positif={name},négatif=0"))


def test_thousands_of_unmatched_keys_are_named_by_the_first_few(monkeypatch):
    calls = []
    closest = evaluate._closest
    monkeypatch.setattr(evaluate, "_closest", lambda key, candidates: calls.append(key) or closest(key, candidates))
    unused = [f"key{i}" for i in range(3000)]
    unknown = Counter({f"label{i}": 1 for i in range(1000)})
    message = unused_keys_message(unused, Counter(unknown), unknown, SimpleNamespace(label_column="label",
                                                                                        input="in.csv"))
    assert calls == unused[:evaluate.SHOWN_KEYS]
    assert message.startswith("--label-map keys 'key0', 'key1', 'key2', 'key3', 'key4', and 2,995 more match no "
                              "label in column 'label' of in.csv, whose labels are 'label0' (1), ")
    assert len(message) < 1000 and "\n" not in message
