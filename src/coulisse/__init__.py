"""coulisse: transformer encoders behind the pipeline — tokenizer, encoder, head, post-processing.

    >>> from coulisse import pipeline
    >>> classifier = pipeline("sentiment-analysis", model="tblard/tf-allocine")
    >>> classifier("J'ai attendu un cours d'HuggingFace toute ma vie.")
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what type checkers see; at run time each name is imported on first use (__getattr__)
    from coulisse.auto import (
        AutoConfig,
        AutoModel,
        AutoModelForMaskedLM,
        AutoModelForMultipleChoice,
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )
    from coulisse.pipelines import pipeline
    from coulisse.sentence import SentenceEncoder
    from coulisse.sparse_encoder import SparseEncoder

    __version__: str

__all__ = ["AutoConfig", "AutoModel", "AutoModelForMaskedLM", "AutoModelForMultipleChoice",
           "AutoModelForQuestionAnswering", "AutoModelForSequenceClassification", "AutoModelForTokenClassification",
           "AutoTokenizer", "SentenceEncoder", "SparseEncoder", "__version__", "pipeline"]
# transformers' Auto classes, for the course's cells with the import line changed (coulisse.auto)
AUTO_CLASSES = tuple(name for name in __all__ if name.startswith("Auto"))


# transformers' class names by family (BertModel, CamembertForSequenceClassification...), named in a refusal that
# points at the Auto classes.
TRANSFORMERS_CLASS = re.compile(r"[A-Z][A-Za-z0-9]*(Model|Config|Tokenizer|TokenizerFast|For[A-Z][A-Za-z]*)")


def __getattr__(name: str):
    # Keep `import coulisse` cheap (the CLI's cold start): torch is imported on first use.
    if name == "pipeline":
        from coulisse.pipelines import pipeline

        return pipeline
    if name == "SentenceEncoder":  # sentence-transformers' encode() over the feature-extraction pipeline
        from coulisse.sentence import SentenceEncoder

        return SentenceEncoder
    if name == "SparseEncoder":  # sentence-transformers' SparseEncoder (SPLADE) over sparse-embedding
        from coulisse.sparse_encoder import SparseEncoder

        return SparseEncoder
    if name in AUTO_CLASSES:
        from coulisse import auto

        return getattr(auto, name)
    if name == "__version__":  # one source of truth: pyproject.toml, as installed
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("coulisse")
        except PackageNotFoundError:  # imported from a source tree that was never installed
            return "0+unknown"
    if TRANSFORMERS_CLASS.fullmatch(name):
        # transformers' classes by family (BertModel, CamembertTokenizer, BertConfig...): the Auto classes load them
        raise AttributeError(f"module 'coulisse' has no attribute {name!r}: coulisse has no classes per family; "
                             "load a checkpoint with its Auto classes (AutoTokenizer, AutoConfig, AutoModel, "
                             "AutoModelForSequenceClassification...).from_pretrained(folder or Hub id).")
    raise AttributeError(f"module 'coulisse' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names too, so that `coulisse.<Tab>` in a notebook offers them.
    return sorted(set(globals()) | set(__all__))
