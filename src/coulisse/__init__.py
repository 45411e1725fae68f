"""coulisse: transformer encoders behind the pipeline — tokenizer, encoder, head, post-processing.

    >>> from coulisse import pipeline
    >>> classifier = pipeline("sentiment-analysis", model="tblard/tf-allocine")
    >>> classifier("J'ai attendu un cours d'HuggingFace toute ma vie.")
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "pipeline"]


def __getattr__(name: str):
    # Keep `import coulisse` cheap (the CLI's cold start): torch is imported on first use.
    if name == "pipeline":
        from coulisse.pipelines import pipeline

        return pipeline
    raise AttributeError(f"module 'coulisse' has no attribute {name!r}")
