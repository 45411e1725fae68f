"""The engine: length-sorted, token-budgeted, packed batches."""

from coulisse.engine.engine import Engine, Item

__all__ = ["Engine", "Item"]
