"""Stage 1 of the pipeline: text to token ids."""

from coulisse.tokenizer.batch_encoding import BatchEncoding, CharSpan, TokenSpan
from coulisse.tokenizer.inputs import check_texts, unicode_problem
from coulisse.tokenizer.tokenizer import Tokenizer

__all__ = ["BatchEncoding", "CharSpan", "TokenSpan", "Tokenizer", "check_texts", "unicode_problem"]
