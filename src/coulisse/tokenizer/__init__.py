"""Stage 1 of the pipeline: text to token ids."""

from coulisse.tokenizer.tokenizer import BatchEncoding, Tokenizer, check_texts, unicode_problem

__all__ = ["BatchEncoding", "Tokenizer", "check_texts", "unicode_problem"]
