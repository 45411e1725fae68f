"""One reader for a checkpoint's small JSON files (tokenizer settings, vocabularies, sentence-transformers
modules, shard indexes): whatever a crafted file holds, a load fails in one typed line, never with Python's
RecursionError, UnicodeDecodeError or a bare ValueError."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from coulisse.config import digit_limit, huge_integer
from coulisse.errors import ModelLoadError, UnsafeCheckpointError


def read_json(path: Path, *, error: type[ModelLoadError] = ModelLoadError,
              fix: str = "fix the file, or delete it") -> Any:
    """The JSON value in `path`; `error` (with `fix`, what the user can do) when it cannot be read or parsed.
    Nesting past the parser's recursion limit and integers past Python's digit limit are refused as unsafe."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path} is not UTF-8 text (byte {e.start} is {e.object[e.start:e.start + 1]!r}); "
                    f"{fix}.") from None
    except OSError as e:
        raise error(f"cannot read {path} ({e.strerror or e}); {fix}.") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON ({e}); {fix}.") from None
    except RecursionError:
        raise UnsafeCheckpointError(
            f"{path} is refused: its JSON nests deeper than the parser allows (about {sys.getrecursionlimit():,} "
            f"levels); {fix}.") from None
    except ValueError:  # an integer past Python's digit limit (4,300 by default)
        raise UnsafeCheckpointError(f"{path} is refused: it has {huge_integer(text)}, past Python's limit of "
                                    f"{digit_limit():,} digits; {fix}.") from None
