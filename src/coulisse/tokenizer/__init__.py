"""Stage 1 of the pipeline: text to token ids."""

from coulisse.tokenizer.batch_encoding import BatchEncoding, CharSpan, TokenSpan
from coulisse.tokenizer.tokenizer import Tokenizer, check_texts, unicode_problem

__all__ = ["BatchEncoding", "CharSpan", "TokenSpan", "Tokenizer", "check_texts", "unicode_problem"]
