"""What `encode_windows` (question answering's windows) says when it fails (audit 46, F6): a stride it cannot
keep is the caller's InputError; a tokenizer that panics on the text stays the tokenizer's TokenizerLoadError,
which a corpus job fails one row on, instead of an InputError blaming the stride, which stops the job."""

from __future__ import annotations

import json
import shutil

import pytest

from coulisse.errors import InputError, TokenizerLoadError
from coulisse.tokenizer import Tokenizer

REDOS = {"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated", "invert": False}
GIVES_UP = "a" * 28 + "!"  # past the regex engine's retry limit: the Rust library panics


@pytest.fixture(scope="module")
def panicky(tmp_path_factory, minilm_dir) -> Tokenizer:
    """MiniLM's tokenizer.json with a pre-tokenizer regex that backtracks without end, run as written."""
    folder = tmp_path_factory.mktemp("panicky")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copy(minilm_dir / name, folder / name)
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [REDOS, data["pre_tokenizer"]]}
    (folder / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"
    (folder / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    return Tokenizer.from_dir(folder, model_type="bert", max_positions=512)


def test_a_panic_in_the_windows_stays_the_tokenizers_error(panicky):
    with pytest.raises(TokenizerLoadError, match=r"gave up on this text: its own pattern") as info:
        panicky.encode_windows(["Qui ?"], [GIVES_UP], max_length=64, stride=16)
    assert not isinstance(info.value, InputError) and "stride" not in str(info.value)
    assert [len(w) for w in panicky.encode_windows(["Qui ?"], ["un texte"], max_length=64, stride=16)] == [1]


def test_a_stride_the_windows_cannot_keep_is_still_refused(minilm_dir):
    tok = Tokenizer.from_dir(minilm_dir, model_type="bert", max_positions=512)
    with pytest.raises(InputError, match="cannot cut windows of 12 tokens with a stride of 4"):
        tok.encode_windows(["une question un peu longue pour la fenêtre ?"], ["un contexte " * 20], max_length=12,
                           stride=4)
    with pytest.raises(InputError, match="cannot cut windows of 12 tokens with a stride of 11"):
        tok.encode_windows(["Qui ?"], ["court"], max_length=12, stride=11)
