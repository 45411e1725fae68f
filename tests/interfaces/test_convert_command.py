"""`coulisse convert`: tblard/tf-allocine's layout (the TensorFlow fixture, from an offline Hugging Face cache)
into a folder transformers 5 loads with no missing or unexpected key and whose logits equal TensorFlow's own;
`--dtype`, `--head`/`--task`, `--overwrite`; errors in one line, exit 1, no traceback, and a refused output
folder refused before any weight is read."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from factory import TEXTS, assert_close
from safetensors import safe_open

from coulisse.checkpoint import load_checkpoint
from coulisse.interfaces.cli import cli

transformers = pytest.importorskip("transformers")
REPO = "tblard/tf-allocine"


@pytest.fixture(scope="module")
def expected(tf_camembert_dir):
    return json.loads((tf_camembert_dir / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture
def offline_hub(offline_hub, monkeypatch):
    """conftest's cache holding tblard/tf-allocine, and none of convert's variables set."""
    for name in ("COULISSE_DTYPE", "COULISSE_CONVERT_DTYPE", "COULISSE_HEAD", "COULISSE_OVERWRITE"):
        monkeypatch.delenv(name, raising=False)
    return offline_hub


def convert(*args):
    return CliRunner().invoke(cli, ["convert", *map(str, args)])


def assert_one_line_error(result, code: int, *words) -> None:
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: "), result.stderr
    assert len(lines) == (1 if code == 1 else 3), result.stderr  # usage errors: click's usage and hint first
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[-1], (word, lines[-1])


def logits(out, texts) -> torch.Tensor:
    model, info = transformers.AutoModelForSequenceClassification.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    with torch.no_grad():
        return model.eval()(**tok(texts, padding=True, truncation=True, return_tensors="pt")).logits


# Run in a fresh interpreter where importing TensorFlow (or Keras) fails, wherever it is installed.
WITHOUT_TENSORFLOW = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("tensorflow", "keras", "tf_keras"):
            raise ImportError("TensorFlow is refused in this test")
sys.meta_path.insert(0, Refuse())
from coulisse.interfaces.cli import main
sys.argv = ["coulisse", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_tf_allocine_from_the_hub_cache_without_tensorflow(offline_hub, tmp_path, expected):
    """The course's model by its Hub id, offline, in a process that cannot import TensorFlow: transformers'
    logits on the output equal TensorFlow's own (expected.json)."""
    out = tmp_path / "tf-allocine-pt"
    done = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, "convert", REPO, str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {out}: CamembertForSequenceClassification, float32, 6 files\n"
    assert "Traceback" not in done.stderr
    assert_close("convert CLI: logits vs TensorFlow", logits(out, expected["texts"]), np.float32(expected["logits"]))


def test_convert_then_transformers(offline_hub, tmp_path, expected):
    out = tmp_path / "out"
    result = convert(REPO, out)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {out}: CamembertForSequenceClassification, float32, 6 files\n"
    assert_close("convert CLI: logits vs TensorFlow", logits(out, expected["texts"]), np.float32(expected["logits"]))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dtype_option(tf_camembert_dir, tmp_path, dtype, monkeypatch):
    result = convert(tf_camembert_dir, tmp_path / "fp32")
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("COULISSE_CONVERT_DTYPE", dtype)  # the option's environment fallback
    result = convert(tf_camembert_dir, tmp_path / dtype)
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(f", {dtype}, 6 files\n")
    assert "note:" not in result.stderr
    want = getattr(torch, dtype)
    with safe_open(str(tmp_path / dtype / "model.safetensors"), "pt") as low, \
            safe_open(str(tmp_path / "fp32" / "model.safetensors"), "pt") as full:
        for key in full.keys():  # noqa: SIM118 - safe_open is no dict
            assert low.get_tensor(key).dtype == want
            assert torch.equal(low.get_tensor(key), full.get_tensor(key).to(want)), key
    assert json.loads((tmp_path / dtype / "config.json").read_text())["dtype"] == dtype
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / dtype))
    assert model.dtype == want


def test_server_dtype_is_not_the_written_one(tf_camembert_dir, tmp_path, monkeypatch):
    """`COULISSE_DTYPE` is `serve`'s compute precision: a shell set for a bf16 server still writes float32 (the
    default), and says which variable or option writes bf16."""
    monkeypatch.delenv("COULISSE_CONVERT_DTYPE", raising=False)
    monkeypatch.setenv("COULISSE_DTYPE", "bfloat16")
    result = convert(tf_camembert_dir, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(", float32, 6 files\n")
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(key).dtype for key in weights.keys()} == {torch.float32}  # noqa: SIM118
    assert "COULISSE_DTYPE=bfloat16" in result.stderr and "--dtype bfloat16" in result.stderr
    assert "COULISSE_CONVERT_DTYPE=bfloat16" in result.stderr
    given = convert(tf_camembert_dir, tmp_path / "given", "--dtype", "float32")  # asked for: no note
    assert given.exit_code == 0 and "note:" not in given.stderr, given.output


def test_task_names_a_head(tf_camembert_dir, tmp_path, caplog):
    """`--task feature-extraction` saves the encoder alone. tf-allocine's classifier has no pooler (RoBERTa's
    classification head reads none): transformers' CamembertModel will draw one, and the log says so."""
    with caplog.at_level(logging.WARNING, logger="coulisse.export"):
        result = convert(tf_camembert_dir, tmp_path / "base", "--task", "feature-extraction")
    assert result.exit_code == 0, result.output
    assert "CamembertModel" in result.stdout
    assert any("no pooler tensors" in r.getMessage() for r in caplog.records)
    model, info = transformers.AutoModel.from_pretrained(str(tmp_path / "base"), output_loading_info=True)
    assert info["missing_keys"] == {"pooler.dense.weight", "pooler.dense.bias"} and not info["unexpected_keys"]
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "base"))
    inputs = tok(TEXTS[:3], padding=True, return_tensors="pt")
    ours = load_checkpoint(tf_camembert_dir, None)  # transformers cannot read the .h5 without TensorFlow
    with torch.no_grad():
        hidden = model.eval()(**inputs).last_hidden_state
    real = inputs["attention_mask"].bool()
    mine = ours.model(**ours.tokenizer(TEXTS[:3], padding=True, return_tensors="pt")).last_hidden_state
    assert_close("convert CLI: base hidden states", mine[real], hidden[real])


def test_a_sentence_transformers_folder_saves_its_encoder(task_factory, tmp_path):
    """all-mpnet-base-v2's folder (tests/task_factory.py): config.json names MPNetForMaskedLM, the weights are the
    bare encoder's. With no --head, convert saves that encoder (MPNetModel, its pooler kept), as modules.json
    says; transformers reads the result and its token states are the folder's, the tokenizer's ids too."""
    from task_factory import all_mpnet_folder

    source = all_mpnet_folder(task_factory, tmp_path / "all-mpnet-base-v2")
    result = convert(source, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["MPNetModel"]
    model, info = transformers.AutoModel.from_pretrained(str(tmp_path / "out"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    texts = [*TEXTS[:3], "Un <mask> de plus."]
    inputs = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))(texts, padding=True,
                                                                               return_tensors="pt")
    ours = load_checkpoint(source, None)
    mine_inputs = ours.tokenizer(texts, padding=True, return_tensors="pt")
    assert torch.equal(mine_inputs["input_ids"], inputs["input_ids"])
    with torch.no_grad():
        hidden = model.eval()(**inputs).last_hidden_state
    real = inputs["attention_mask"].bool()
    assert_close("convert CLI: all-mpnet encoder", ours.model(**mine_inputs).last_hidden_state[real], hidden[real])


def test_a_splade_folder_keeps_its_masked_lm_head(task_factory, tmp_path):
    """A SparseEncoder folder has a modules.json too, but SPLADE reads the masked-LM head: still the default; its
    modules are carried, so the converted folder pools as the source does (sum, not the default max)."""
    from sentence_transformers import SparseEncoder as TheirSparseEncoder
    from task_factory import oracle, sparse_encoder_folder

    from coulisse import SparseEncoder

    source, theirs = sparse_encoder_folder(task_factory, "bert", tmp_path, strategy="sum")
    result = convert(source, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    # its modules are carried too: the converted folder is a SparseEncoder folder, in coulisse and their library
    expected = oracle(theirs, TEXTS[:3])
    converted = TheirSparseEncoder(str(tmp_path / "out"), device="cpu")
    np.testing.assert_allclose(oracle(converted, TEXTS[:3]), expected, atol=1e-5)
    ours = SparseEncoder(str(tmp_path / "out"))
    np.testing.assert_allclose(oracle(ours, TEXTS[:3]), expected, atol=1e-5)


def test_a_cross_encoder_folder_keeps_its_classifier(factory, tmp_path):
    """sentence-transformers 6 saves a CrossEncoder with a modules.json too (one Transformer module whose
    `transformer_task` is sequence-classification): converted as an embedding folder, its classifier was dropped
    and CrossEncoder(out) scored with a random head (audit 42)."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    source = tmp_path / "reranker"
    sentence_transformers.CrossEncoder(str(factory.checkpoint("bert", num_labels=1)), device="cpu").save(str(source))
    if not (source / "modules.json").is_file():
        pytest.skip("this sentence-transformers saves a CrossEncoder without modules.json")
    result = convert(source, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == [
        "BertForSequenceClassification"]
    pairs = [["Qui a réalisé Amélie ?", "Jean-Pierre Jeunet a réalisé « Amélie »."], ["Où est l'œil ?", "Bof."]]
    expected = sentence_transformers.CrossEncoder(str(source), device="cpu").predict(pairs)
    converted = sentence_transformers.CrossEncoder(str(tmp_path / "out"), device="cpu").predict(pairs)
    np.testing.assert_allclose(converted, expected, atol=1e-5)


def test_a_folder_of_the_checkpoints_own_is_refused_even_with_overwrite(minilm_dir, tmp_path):
    """`convert src src/1_Pooling --overwrite` wrote the model's config.json over the Pooling module's: the source
    no longer loaded anywhere. A new folder inside the source stays allowed."""
    source = tmp_path / "minilm"
    shutil.copytree(minilm_dir, source)
    before = (source / "1_Pooling" / "config.json").read_bytes()
    assert_one_line_error(convert(source, source / "1_Pooling", "--overwrite"), 1, "InputError",
                          "a folder of the checkpoint's own")
    assert (source / "1_Pooling" / "config.json").read_bytes() == before
    assert convert(source, source / "converted").exit_code == 0


def test_non_empty_output_is_refused_before_any_weight_is_read(tf_camembert_dir, tmp_path):
    source = tmp_path / "corrupt"
    shutil.copytree(tf_camembert_dir, source)
    (source / "tf_model.h5").write_bytes(b"not an HDF5 file")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_one_line_error(convert(source, out), 1, "InputError", str(out), "not empty", "--overwrite")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    # With --overwrite the weights are read: the corrupt file is reported, and nothing is written.
    assert_one_line_error(convert(source, out, "--overwrite"), 1, "ModelLoadError", "tf_model.h5")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt", "out"]  # no staging folder left behind
    result = convert(tf_camembert_dir, out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "keep.txt").read_text() == "mine"


def test_errors_are_one_line(tf_camembert_dir, tmp_path):
    out = tmp_path / "out"
    assert_one_line_error(convert(tmp_path / "nope", out), 1, str(tmp_path / "nope"))
    assert_one_line_error(convert(tf_camembert_dir, out, "--head", "masked-lm"), 1, "MissingHeadError", "masked-lm",
                          "use --task text-classification or --task feature-extraction")  # this command's words
    assert not out.exists()
    assert_one_line_error(convert(tf_camembert_dir, tf_camembert_dir, "--overwrite"), 1, "own folder")
    assert_one_line_error(convert(tf_camembert_dir, out, "--head", "classifier"), 2, "'classifier'",
                          "sequence-classification", "text-classification")
    assert_one_line_error(convert(tf_camembert_dir, out, "--dtype", "int8"), 2, "'int8'", "float16")
    assert not out.exists()


def test_a_sentence_transformers_folder_embeds_as_it_did(minilm_dir, tmp_path):
    """all-MiniLM-L6-v2's folder: the converted one keeps modules.json, the Pooling folder, Normalize,
    sentence_bert_config.json (max_seq_length 256) and config_sentence_transformers.json, so sentence-transformers
    and coulisse embed with it as sentence-transformers does with the source (≤ 1e-5, tests/test_sentence.py's
    tolerance). Before, only the encoder was written: coulisse's vectors had norm 6.4, not 1."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from coulisse import SentenceEncoder

    out = tmp_path / "out"
    result = convert(minilm_dir, out)
    assert result.exit_code == 0, result.output
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                 "1_Pooling/config.json"):
        assert (out / name).read_bytes() == (minilm_dir / name).read_bytes(), name
    assert result.stdout == f"wrote {out}: BertModel, float32, {sum(p.is_file() for p in out.rglob('*'))} files\n"
    # No `extra_special_tokens: []` where transformers 5's own save writes none: transformers 4 (a
    # sentence-transformers setup pinned to it) reads a dict there and could not load the folder (audit 40).
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(minilm_dir)).save_pretrained(tmp_path / "theirs")
    settings = [json.loads((d / "tokenizer_config.json").read_text()) for d in (out, tmp_path / "theirs")]
    assert not any("extra_special_tokens" in written for written in settings)
    texts = [*TEXTS[:3], "A man is playing a guitar. " * 80]  # past max_seq_length
    source = sentence_transformers.SentenceTransformer(str(minilm_dir), device="cpu")
    theirs = source.encode(texts)
    converted = sentence_transformers.SentenceTransformer(str(out), device="cpu")
    assert converted.max_seq_length == source.max_seq_length == 256
    np.testing.assert_allclose(converted.encode(texts), theirs, atol=1e-5)
    ours = SentenceEncoder(str(out))
    assert ours.max_seq_length == 256
    np.testing.assert_allclose(ours.encode(texts), theirs, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(theirs, axis=1), 1.0, atol=1e-5)
    cli_vector = CliRunner().invoke(cli, ["embed", "-m", str(out), "--json", texts[0]])
    assert cli_vector.exit_code == 0, cli_vector.output
    np.testing.assert_allclose(json.loads(cli_vector.stdout)["embedding"], theirs[0], atol=1e-5)


def test_a_module_path_out_of_the_folder_is_refused_and_nothing_is_written(minilm_dir, tmp_path):
    """The loader's rule holds for convert: a module whose path leads out of the model folder is never read."""
    source = tmp_path / "crafted"
    shutil.copytree(minilm_dir, source)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "config.json").write_text('{"token": "s3cret"}')
    modules = json.loads((source / "modules.json").read_text())
    modules[1]["path"] = "../secret"
    (source / "modules.json").write_text(json.dumps(modules))
    assert_one_line_error(convert(source, tmp_path / "out"), 1, "ModelLoadError", "'../secret'", "leads out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", [".norm", "inner/deep/norm", "linked"])
def test_a_module_folder_the_load_did_not_scan_has_its_links_checked(minilm_dir, tmp_path, where):
    """A module in a hidden folder (".norm"), a deep one, or one reached through a link to a folder inside, holding
    a symlink to a file outside the model: convert copied the outside file into the output (embed read it) where
    a link in 1_Pooling/ is refused. Now refused the same way, by convert and by the load; nothing is written."""
    source = tmp_path / "crafted"
    shutil.copytree(minilm_dir, source)
    (tmp_path / "outside.txt").write_text("s3cret")
    folder = source / ("inner/deep/norm" if where == "linked" else where)
    folder.mkdir(parents=True)
    (folder / "leak.txt").symlink_to(tmp_path / "outside.txt")
    if where == "linked":
        (source / "linked").symlink_to(folder, target_is_directory=True)
    modules = json.loads((source / "modules.json").read_text())
    modules.append({"idx": len(modules), "name": "2", "path": where, "type": "sentence_transformers.models.Normalize"})
    (source / "modules.json").write_text(json.dumps(modules))
    assert_one_line_error(convert(source, tmp_path / "out"), 1, "UnsafeCheckpointError", "leak.txt", "outside")
    assert not (tmp_path / "out").exists()
    embedded = CliRunner().invoke(cli, ["embed", "-m", str(source), "Bonjour."])
    assert embedded.exit_code == 1 and "UnsafeCheckpointError" in embedded.output, embedded.output


def test_a_module_path_that_is_the_folder_itself_does_not_copy_the_source_over_the_output(minilm_dir, tmp_path):
    """"1_Pooling/.." is the model folder: its files were copied over those convert had written (a float16
    conversion left the float32 weights, and said float16)."""
    source = tmp_path / "crafted"
    shutil.copytree(minilm_dir, source)
    modules = json.loads((source / "modules.json").read_text())
    modules.append({"idx": len(modules), "name": "2", "path": "1_Pooling/..",
                    "type": "sentence_transformers.models.Normalize"})
    (source / "modules.json").write_text(json.dumps(modules))
    result = convert(source, tmp_path / "out", "--dtype", "float16")
    assert result.exit_code == 0, result.output
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}  # noqa: SIM118


def test_overwrite_counts_the_files_it_wrote(tf_camembert_dir, tmp_path):
    """--overwrite keeps a file of the user's (notes.txt) and says how many it wrote: 6, not the 7 there."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = convert(tf_camembert_dir, out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {out}: CamembertForSequenceClassification, float32, 6 files\n"
    assert (out / "notes.txt").read_text() == "mine" and len(list(out.iterdir())) == 7


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no file can be created")
def test_an_unwritable_output_is_refused_before_the_checkpoint_is_read(tmp_path):
    """OUT_DIR /proc/x: one line naming /proc/x (the audit saw the staging folder /proc/.x.coulisse-da1b3501,
    after the weights were read and converted); a model that does not exist shows it comes first."""
    result = convert(tmp_path / "no-model", "/proc/x")
    assert_one_line_error(result, 1, "OutputError: cannot write in /proc (for OUT_DIR /proc/x): No such file or "
                                     "directory (ENOENT); write somewhere else.")
    assert ".coulisse-" not in result.stderr


def test_sigterm_stops_it_as_ctrl_c_and_removes_what_it_began(tf_camembert_dir, tmp_path, monkeypatch):
    """SIGTERM (docker stop, a job scheduler) while the weights are written: exit 143, as the jobs stop, and no
    hidden staging folder left behind (it was, as large as the model: audit 40)."""
    import os
    import signal

    import coulisse.export

    written = []

    def terminated(tensors, path, dtype):
        written.append(path)
        path.write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(coulisse.export, "save_safetensors", terminated)
    handler = signal.getsignal(signal.SIGTERM)
    new, existing = tmp_path / "new", tmp_path / "existing"
    existing.mkdir()
    for out in (new, existing):
        result = convert(tf_camembert_dir, out)
        assert result.exit_code == 143, result.output
        assert written[-1].parent.name.startswith(".") and not written[-1].parent.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["existing"] and not any(existing.iterdir())
    assert signal.getsignal(signal.SIGTERM) == handler  # given back after the command
