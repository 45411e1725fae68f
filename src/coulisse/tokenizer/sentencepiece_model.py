"""Read a SentencePiece `.model` file without protobuf or sentencepiece installed.

The file is a serialized `ModelProto`; inference needs a few of its fields: the pieces with their
scores (and types, for control and user-defined pieces), the model type, and the normalizer's
precompiled character map. A 60-line wire-format reader
is lighter than two runtime dependencies.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from coulisse.errors import TokenizerLoadError

UNIGRAM, BPE = 1, 2
# SentencePiece piece types (ModelProto.SentencePiece.Type); NORMAL pieces are not recorded.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED = 1, 2, 3, 4
# ModelProto.SentencePiece's fields -> their wire type: piece (bytes), score (fixed32), type (varint)
PIECE_WIRES = {1: 2, 2: 5, 3: 0}


@dataclass
class SentencePieceModel:
    pieces: list[tuple[str, float]]
    model_type: int = UNIGRAM
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    byte_fallback: bool = False
    unk_id: int = 0
    extra: dict[str, int] = field(default_factory=dict)
    piece_types: dict[int, int] = field(default_factory=dict)  # piece id -> type, for non-NORMAL pieces

    def control_pieces(self) -> list[str]:
        """The control pieces (<s>, </s>, [CLS]...), in id order."""
        return [self.pieces[i][0] for i, kind in sorted(self.piece_types.items()) if kind == CONTROL]


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        if shift > 63:  # protobuf's varints hold 64 bits in at most 10 bytes; a longer run would grow a bigint
            raise ValueError(f"a varint runs past 10 bytes (at byte {pos})")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """Yield (field_number, wire_type, value) for each field of a protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated message")
        yield number, wire, value


def _expect(number: int, wire: int, expected: int, where: str) -> None:
    if wire != expected:
        raise ValueError(f"{where} field {number} has wire type {wire}, not {expected}")


def _piece(buf: bytes) -> tuple[str, float, int]:
    # Fast path for the usual layout: field 1 (piece, length < 128), field 2 (score, fixed32), and
    # nothing else (a NORMAL piece) or field 3 (type, one byte).
    if not buf:
        raise ValueError("a piece is empty")
    n = buf[1] if len(buf) > 1 else 0x80
    if buf[0] == 0x0A and 0 < n < 0x80 and buf[n + 2 : n + 3] == b"\x15":
        if len(buf) == n + 7:
            return buf[2 : 2 + n].decode("utf-8"), struct.unpack_from("<f", buf, n + 3)[0], NORMAL
        if len(buf) == n + 9 and buf[n + 7] == 0x18 and buf[n + 8] < 0x80:
            return buf[2 : 2 + n].decode("utf-8"), struct.unpack_from("<f", buf, n + 3)[0], buf[n + 8]
    text, score, kind = "", 0.0, NORMAL
    for number, wire, value in _fields(buf):
        if number in PIECE_WIRES:
            _expect(number, wire, PIECE_WIRES[number], "a piece's")
        if number == 1:
            text = value.decode("utf-8")
        elif number == 2:
            (score,) = struct.unpack("<f", value)
        elif number == 3:
            kind = value
    if not text:
        raise ValueError("a piece is empty")
    return text, score, kind


def parse_sentencepiece(data: bytes) -> SentencePieceModel:
    model = SentencePieceModel(pieces=[])
    for number, wire, value in _fields(data):
        if number in (1, 2, 3):  # the pieces, TrainerSpec, NormalizerSpec: messages
            _expect(number, wire, 2, "the model's")
        if number == 1:
            text, score, kind = _piece(value)
            if kind != NORMAL:
                model.piece_types[len(model.pieces)] = kind
            model.pieces.append((text, score))
        elif number == 2:  # TrainerSpec
            for n, w, v in _fields(value):
                if n in (3, 35, 40):
                    _expect(n, w, 0, "TrainerSpec's")
                if n == 3:
                    model.model_type = v
                elif n == 35:
                    model.byte_fallback = bool(v)
                elif n == 40:
                    model.unk_id = v
        elif number == 3:  # NormalizerSpec
            for n, w, v in _fields(value):
                if n in (2, 3):
                    _expect(n, w, 2 if n == 2 else 0, "NormalizerSpec's")
                if n == 2:
                    model.precompiled_charsmap = bytes(v)
                elif n == 3:
                    model.add_dummy_prefix = bool(v)
    if not model.pieces:
        raise ValueError("no pieces")
    return model


def load_sentencepiece(path: Path) -> SentencePieceModel:
    try:
        return parse_sentencepiece(Path(path).read_bytes())
    except (ValueError, UnicodeDecodeError, struct.error, TypeError, IndexError) as e:
        raise TokenizerLoadError(
            f"{path} is not a valid SentencePiece model ({e}); re-download it or provide a tokenizer.json."
        ) from e
