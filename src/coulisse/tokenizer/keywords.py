"""transformers' tokenizer keywords that coulisse accepts at their no-op values, and the refusal of the rest.

transformers 5 ignores a keyword it does not know (`paddding=True` pads nothing, silently); coulisse refuses
it in one line naming the closest valid keyword, so that a typo is seen. A keyword transformers knows, at the
value that changes nothing (`verbose=False`, `text_target=None`, `split_special_tokens=False`...), is accepted, as code
copied from transformers' documentation passes them; at another value it is refused, saying that coulisse
cannot honour it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from coulisse.errors import InputError

ANY = object()  # any value is a no-op

# keyword -> the values that change nothing (ANY: every value)
CALL_NO_OPS: dict[str, Any] = {
    "verbose": ANY,
    "text_target": (None,), "text_pair_target": (None,), "split_special_tokens": (False,),
}
DECODE_NO_OPS: dict[str, Any] = {"spaces_between_special_tokens": ANY, "use_source_tokenizer": ANY, "verbose": ANY}
WHY = {
    "text_target": "targets are for sequence-to-sequence training; coulisse runs encoders for inference",
    "text_pair_target": "targets are for sequence-to-sequence training; coulisse runs encoders for inference",
    "split_special_tokens": "special tokens written in the text are read as tokenizer_config.json's "
                            "split_special_tokens says (by default: as special tokens)",
}


def check_keywords(kwargs: dict[str, Any], no_ops: dict[str, Any], valid: Iterable[str], where: str) -> None:
    """Accept `kwargs` whose keywords are no-ops at these values; refuse the others in one line."""
    names = sorted({*valid, *no_ops})
    for name, value in kwargs.items():
        if name not in no_ops:
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keywords: {', '.join(names)}."
            raise InputError(f"{where} got an unknown keyword {name!r}{hint} (transformers ignores unknown "
                             "keywords silently; coulisse refuses them so that a typo is seen)")
        accepted = no_ops[name]
        if accepted is not ANY and not any(value is v or (type(value) is type(v) and value == v)
                                           for v in accepted):
            default, why, shown = accepted[0], WHY.get(name, ""), repr(value)
            if len(shown) > 60:  # text_target= with a whole column of texts: its start and its size
                shown = f"{shown[:40]}... ({type(value).__name__} of {len(shown):,} characters as written)"
            raise InputError(f"{where} cannot honour {name}={shown}: only {name}={default!r} (what it does "
                             f"by default) is accepted{'; ' + why if why else ''}.")
