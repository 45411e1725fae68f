"""Which model runs when the caller names none, and the model that ships inside the package: names and
places only (the choice itself, which asks the Hub, is `coulisse.hub_fallback.default_model`).

`pipeline("sentiment-analysis")` and `coulisse classify` without a model use the course's
`tblard/tf-allocine` when it is in the Hugging Face cache or the Hub answers; otherwise (offline, no
network, Hub down) they run `coulisse/mini-allocine`, a small CamemBERT trained by
`training/train_mini_allocine.py` and shipped in the wheel, and say so in one log line. A model the
caller names never falls back.
"""

from __future__ import annotations

from pathlib import Path

# transformers' other names of two tasks, accepted wherever a task is named (pipeline(), --task)
ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}
DEFAULT_MODEL = "tblard/tf-allocine"
# The course's model serves these tasks; the others have no default worth downloading blind.
DEFAULT_MODELS = {"sentiment-analysis": DEFAULT_MODEL, "text-classification": DEFAULT_MODEL}

BUNDLED_MODEL = "coulisse/mini-allocine"
BUNDLED_DIR = Path(__file__).parent / "bundled" / "mini-allocine"
# Held-out accuracy stated in the bundled model card (tests/test_bundled_model.py measures it again).
BUNDLED_ACCURACY = 0.863  # 358 of 415 held-out reviews
TF_ALLOCINE_ACCURACY = 0.974  # tblard/tf-allocine's reported test accuracy
# The texts it learnt from, as digests (training/training_digests.py): `coulisse evaluate` counts the rows it
# scores that are among them, whose scores are then no held-out figure.
BUNDLED_TRAINING_DIGESTS = BUNDLED_DIR / "training_texts.sha256"


def offline_hint(message: str) -> str:
    """A Hub error's line for a French sentiment user: the bundled model is at hand (never a silent swap)."""
    return f"{message} Offline, the bundled French sentiment model runs: --model {BUNDLED_MODEL} " \
           f"(in Python: model={BUNDLED_MODEL!r})."


def bundled_dir(name: str) -> Path | None:
    """The folder of a model shipped inside the package, or None if `name` is not one."""
    return BUNDLED_DIR if name == BUNDLED_MODEL else None
