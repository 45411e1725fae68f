"""The engine: length-sorted, token-budgeted, packed batches."""

from coulisse.engine.engine import DEFAULT_BATCH_SIZE, DEFAULT_BATCH_TOKENS, Engine, Item

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_BATCH_TOKENS", "Engine", "Item"]
