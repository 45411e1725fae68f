"""What the embedding routes add around the feature-extraction pipeline's stages, as TEI does it:
sentence-transformers prompts (`prompt_name`, config_sentence_transformers.json), token-id inputs,
Matryoshka `dimensions` (cut, then renormalize), cosine similarity and OpenAI's base64 vectors.
Plain Python and numpy: no HTTP, no torch.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from coulisse.engine import Item
from coulisse.errors import CoulisseError, InputError
from coulisse.interfaces.server.errors import ServerError


class Prompts:
    """The folder's prompts (`config_sentence_transformers.json`), read once at start-up, and the prompt put
    before a text that names none: TEI's `--default-prompt-name` / `--default-prompt`, else nothing. TEI reads
    only `prompts` from the file, never its `default_prompt_name` (router/src/lib.rs)."""

    def __init__(self, directory: Path, default_name: str | None = None, default_text: str | None = None):
        from coulisse.tasks.feature_extraction import read_prompts

        if default_name is not None and default_text is not None:
            raise InputError("--default-prompt-name and --default-prompt both given; pass one of them.")
        self.prompts, _ = read_prompts(directory)
        if default_name is not None and default_name not in self.prompts:
            known = ", ".join(repr(p) for p in sorted(self.prompts))
            fix = (f"(config_sentence_transformers.json has {known}); pass one of those" if known else
                   "(it has no config_sentence_transformers.json prompts); drop it, or give the text itself with "
                   "--default-prompt")
            raise InputError(f"--default-prompt-name {default_name!r} is not a prompt of {directory} {fix}.")
        self.default = self.prompts[default_name] if default_name is not None else default_text or ""

    def text(self, prompt_name: str | None, field: str = "prompt_name") -> str:
        """The prompt to put before each text: `prompt_name`'s, else the server's default one (TEI's rule)."""
        if prompt_name is None:
            return self.default
        if prompt_name not in self.prompts:
            known = ", ".join(repr(p) for p in sorted(self.prompts)) or "none"
            raise ServerError("validation", f"Input validation error: {field}={prompt_name!r} is not a prompt of "
                              f"this model (config_sentence_transformers.json has {known})")
        return self.prompts[prompt_name]


def shown_id(value: int) -> str:
    """A token id for a message: a client's 300-digit "id" is named by its first digits and its length."""
    text = str(value)
    return text if len(text) <= 20 else f"{text[:12]}... ({len(text)} digits)"


# OpenAI's route: what sends ids of another tokenizer, and how to make it send the text (docs/server.md)
FOREIGN_IDS_HINT = ("; ids of another tokenizer? LangChain's OpenAIEmbeddings sends tiktoken's (OpenAI's) unless "
                    "given check_embedding_ctx_length=False, which sends the text")


def check_ids(ids: list[int], vocab_size: int, field: str, hint: str = "") -> None:
    """Token ids given by the client are ids of this model's vocabulary: a 422 naming the first that is not."""
    bad = next((i for i in ids if i >= vocab_size), None)
    if bad is not None:
        raise ServerError("validation", f"Input validation error: {field} holds token id {shown_id(bad)}, outside this "
                          f"model's vocabulary (0..{vocab_size - 1}){hint}")


def id_item(ids: list[int], vocab_size: int, max_length: int, truncate: bool, field: str,
            side: str = "right") -> Item:
    """Token ids given by the client: the model's own ids, special tokens included, as TEI takes them; a
    list too long is cut as given, at its end (`side="left"`: at its start, special tokens included)."""
    check_ids(ids, vocab_size, field)
    if truncate and len(ids) > max_length:
        ids = ids[-max_length:] if side == "left" else ids[:max_length]
    return Item(list(ids), [0] * len(ids))


def cut_dimensions(vectors: list[list[float]], dimensions: int | None, normalize: bool,
                   field: str = "dimensions") -> list[list[float]]:
    """Matryoshka truncation: the first `dimensions` values, renormalized to unit length when `normalize`
    (normalizing the cut of a unit vector equals normalizing the cut of the raw one)."""
    if dimensions is None:
        return vectors
    size = len(vectors[0]) if vectors else 0
    if dimensions > size:
        raise ServerError("validation", f"Input validation error: {field}={dimensions} is larger than this "
                          f"model's {size} dimensions; pass {size} or fewer")
    cut = np.asarray(vectors, dtype=np.float32)[:, :dimensions]
    if normalize:  # as sentence-transformers' Normalize: divide by max(norm, 1e-12)
        cut = cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)
    return cut.astype(np.float32).tolist()


def cosine(source: list[float], others: list[list[float]]) -> list[float]:
    """Cosine similarity of `source` with each of `others` (TEI's /similarity, float64 sums)."""
    a = np.asarray(source, dtype=np.float64)
    b = np.asarray(others, dtype=np.float64)
    norms = np.maximum(np.linalg.norm(b, axis=1) * np.linalg.norm(a), 1e-12)
    return (b @ a / norms).astype(np.float32).tolist()


def as_base64(vector: list[float]) -> str:
    """OpenAI's `encoding_format="base64"`: the little-endian float32 bytes (what the SDK decodes with
    `np.frombuffer(base64.b64decode(s), dtype="float32")`)."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def library_error(e: CoulisseError, field: str) -> ServerError:
    """A pipeline's refusal of a request value, as a 422 naming the field."""
    return ServerError("validation", f"Input validation error: {field}: {e}")
