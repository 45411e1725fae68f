"""The int8 weight cache: reused only for the same checkpoint, CPU features and coulisse version; a bad
file is rebuilt, never fatal; and the codes read back give exactly the answers of codes computed fresh."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys

import numpy as np
import pytest
import torch
from factory import TEXTS
from resident import resident_kb
from safetensors.torch import load_file, save_file

from coulisse import pipeline
from coulisse.checkpoint import model_files
from coulisse.engine import cache, cpu
from coulisse.models import quantize as Q


@pytest.fixture
def folder(factory, tmp_path):
    """A private copy of a random BERT classifier (the tests rewrite its weights)."""
    directory = tmp_path / "model"
    shutil.copytree(factory.checkpoint("bert"), directory)
    return directory


@pytest.fixture
def store(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("COULISSE_CACHE", str(path))
    return path


def files(store):
    return sorted((store / "int8").glob("*.safetensors")) if (store / "int8").is_dir() else []


def logits(directory, **options):
    pipe = pipeline("text-classification", model=directory, quantize="int8", **options)
    return pipe, np.array(pipe.forward(pipe.preprocess(TEXTS)))


def test_second_load_reads_the_codes_and_answers_the_same(folder, store, monkeypatch):
    first, a = logits(folder)
    assert "cached in" in first.preparation.fast_path and len(files(store)) == 1

    def refuse(*args):
        raise AssertionError("the weights were quantized again despite the cache")

    monkeypatch.setattr(Q, "quantize_weight", refuse)
    second, b = logits(folder)
    assert "read from the cache" in second.preparation.fast_path
    assert np.array_equal(a, b)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc are Linux's")
def test_codes_read_from_the_cache_leave_the_resident_set_once_packed(folder, store, tmp_path):
    """oneDNN packs its own copy of the codes at load, so the cache file's mapped codes leave the resident
    set (81 MB for a base-size model); fbgemm's packing for small batches pages them back in from the file,
    unchanged: the single-text answers equal those of codes computed fresh, to the bit."""
    from transformers import BertConfig, BertForSequenceClassification

    wide = tmp_path / "wide"  # the tiny model's codes fill 3 pages: too few to tell resident from not
    config = BertConfig.from_pretrained(folder)
    config.update(dict(hidden_size=256, intermediate_size=1024, num_attention_heads=4))
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(wide)
    for f in folder.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            shutil.copy(f, wide / f.name)
    first, _ = logits(wide)
    second, _ = logits(wide)
    (path,) = files(store)
    codes = sum(t.numel() for t in load_file(str(path)).values() if t.dtype == torch.int8)
    assert codes >= 64 * 1024, "the test needs codes spanning many pages"
    assert resident_kb(path) * 1024 < codes / 4, f"{resident_kb(path)} kB of {codes // 1024} kB still resident"
    for _ in range(Q.PACK_SMALL_AFTER + 1):
        one = [np.array(pipe.forward(pipe.preprocess(TEXTS[:1]))) for pipe in (first, second)]
    assert any(m.packed_small is not None for m in second.model.modules() if isinstance(m, Q.Int8Linear)) \
        or not Q.fbgemm_available()
    assert np.array_equal(one[0], one[1])
    assert resident_kb(path) * 1024 < codes / 4, "fbgemm has packed its copy: the codes leave again"


def test_cache_off(folder, monkeypatch, tmp_path):
    monkeypatch.setenv("COULISSE_CACHE", "0")
    pipe, _ = logits(folder)
    assert "cache off" in pipe.preparation.fast_path
    assert cache.cache_dir() is None


def rewrite_weights(folder):
    """New weights in the same file, same size, with the old mtime put back (as `cp -p` would)."""
    path = folder / "model.safetensors"
    before = path.stat()
    tensors = load_file(path)
    torch.manual_seed(7)
    tensors = {k: (torch.randn_like(v) * v.std() if v.is_floating_point() and v.dim() == 2 else v)
               for k, v in tensors.items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns


def test_a_changed_checkpoint_never_reads_the_old_codes(folder, store, monkeypatch):
    logits(folder)
    old = files(store)
    rewrite_weights(folder)
    pipe, cached = logits(folder)
    # The old codes, of files no longer there, are removed as the new ones are written: one entry, the new one.
    assert "read from the cache" not in pipe.preparation.fast_path and len(files(store)) == 1
    assert files(store) != old and str(files(store)[0]) in pipe.preparation.fast_path
    monkeypatch.setenv("COULISSE_CACHE", "0")
    _, fresh = logits(folder)  # the oracle: the new weights quantized with no cache at all
    assert np.array_equal(cached, fresh)


def test_the_key_sees_a_rewrite_that_keeps_size_and_mtime(folder):
    key = cache.make_key(folder.iterdir(), "avx2", 7)
    rewrite_weights(folder)
    assert cache.make_key(folder.iterdir(), "avx2", 7) != key


def test_other_cpu_features_never_read_the_codes(folder, store, monkeypatch):
    logits(folder)
    here = cpu.detect()
    # A flag in the key that changes no int8 choice here: the codes are the same, the key is not.
    extra = "avx_ne_convert"
    flags = here.flags - {extra} if extra in here.flags else here.flags | {extra}
    monkeypatch.setattr(cpu, "detect", lambda: cpu.Features(flags, here.capability))
    pipe, _ = logits(folder)
    assert "read from the cache" not in pipe.preparation.fast_path and len(files(store)) == 2


def test_another_version_never_reads_the_codes(folder, store, monkeypatch):
    logits(folder)
    monkeypatch.setattr(cache, "version", lambda: "999.0.0")
    pipe, _ = logits(folder)
    assert "read from the cache" not in pipe.preparation.fast_path and len(files(store)) == 1  # the older pruned


def test_pruning_keeps_other_checkpoints_and_unreadable_files(folder, store, factory, tmp_path):
    """Only the entries of the same files, CPU and width under another key go: another checkpoint's codes stay,
    and so does a file in the folder whose key cannot be read."""
    other = tmp_path / "other"
    shutil.copytree(factory.checkpoint("bert", num_labels=3), other)
    logits(other)
    kept = files(store)
    stray = store / "int8" / "not-ours.safetensors"
    stray.write_bytes(b"\x00" * 16)
    logits(folder)
    rewrite_weights(folder)
    logits(folder)
    assert set(kept) < set(files(store)) and stray.exists() and len(files(store)) == 3  # other, new, stray


@pytest.mark.parametrize("damage", ["truncate", "garble", "empty", "changed-codes", "out-of-range", "other-key",
                                    "no-checksums"])
def test_a_bad_file_is_rebuilt_not_fatal(folder, store, caplog, damage):
    _, a = logits(folder)
    (path,) = files(store)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garble":
        path.write_bytes(b"\xff" * 64 + data[64:])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        tensors = load_file(path)
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
        name = next(k for k in tensors if k.endswith(".q"))
        if damage == "no-checksums":  # what a version before checksums wrote: rebuilt, said at INFO only
            del metadata["coulisse_crc32"]
        elif damage == "changed-codes":  # valid codes, other values: only the checksums tell (audit 41)
            tensors[name] = torch.flip(tensors[name], dims=[0]).contiguous()
        elif damage == "out-of-range":  # its checksums made to match: the range check must tell
            tensors[name] = torch.full_like(tensors[name], -128)  # beyond ±127, and ±63 on AVX2
            layers = {k.rsplit(".", 1)[0] for k in tensors}
            metadata["coulisse_crc32"] = json.dumps(cache.checksums(
                {n: (tensors[f"{n}.q"], tensors[f"{n}.scale"]) for n in layers}), sort_keys=True)
        else:
            metadata["coulisse_key"] = metadata["coulisse_key"].replace('"format": 1', '"format": 0')
        save_file(tensors, str(path), metadata=metadata)
    with caplog.at_level(logging.INFO, logger="coulisse.engine.cache"):
        pipe, b = logits(folder)
    assert "read from the cache" not in pipe.preparation.fast_path
    assert any("rebuilding" in r.getMessage() for r in caplog.records)
    if damage == "no-checksums":
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert np.array_equal(a, b)
    assert cache.load_codes(path, cache.make_key(
        model_files(folder), cpu.detect().key, cpu.this_machine().int8.options["weight_bits"])) is not None


def test_an_unwritable_cache_only_warns(folder, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x", encoding="utf-8")
    monkeypatch.setenv("COULISSE_CACHE", str(blocker))
    with caplog.at_level(logging.WARNING, logger="coulisse.engine.cache"):
        pipe, _ = logits(folder)
    assert "could not be written" in pipe.preparation.fast_path
    assert any("could not write" in r.getMessage() for r in caplog.records)


def test_fbgemms_layers_say_the_cache_does_not_apply(folder, store, monkeypatch):
    """A torch without oneDNN quantizes with fbgemm, which makes no codes to cache: the load said "the cache could
    not be written" though nothing failed (audit 46)."""
    import torch

    from coulisse.models import quantize

    if "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("this torch has no fbgemm")
    monkeypatch.setattr(quantize, "onednn_available", lambda: False)
    pipe, _ = logits(folder)
    said = pipe.preparation.fast_path
    assert "quantized at load (fbgemm's layers: no cache)" in said and "could not be written" not in said, said
    assert files(store) == []


def test_shards_in_a_subfolder_are_in_the_key(factory, tmp_path, store, monkeypatch):
    """An index may put its shards in a subfolder: the key was built from the folder's top-level files, so a
    rewritten shard kept the old codes (logits -1.82/2.10 where transformers gives -0.685/0.781: audit 41)."""
    folder = tmp_path / "sharded"
    shutil.copytree(factory.checkpoint("bert", "sharded-safetensors"), folder)
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    (folder / "shards").mkdir()
    for shard in set(index["weight_map"].values()):
        (folder / shard).rename(folder / "shards" / shard)
    index["weight_map"] = {k: f"shards/{v}" for k, v in index["weight_map"].items()}
    index_path.write_text(json.dumps(index), encoding="utf-8")
    logits(folder)
    shard = folder / "shards" / sorted(set(index["weight_map"].values()))[0].split("/")[1]
    before = shard.stat()
    tensors = load_file(shard)
    torch.manual_seed(11)
    save_file({k: torch.randn_like(v) * v.std() if v.is_floating_point() and v.dim() == 2 else v
               for k, v in tensors.items()}, str(shard), metadata={"format": "pt"})
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
    pipe, cached = logits(folder)
    assert "read from the cache" not in pipe.preparation.fast_path
    monkeypatch.setenv("COULISSE_CACHE", "0")
    _, fresh = logits(folder)
    assert np.array_equal(cached, fresh)


def test_a_file_the_load_does_not_read_is_not_in_the_key(folder, store):
    """Notes, a README, an unreadable stray file beside the checkpoint: the key is the files the load reads, so
    adding one keeps the codes (and one this user cannot read made every int8 load fail: audit 41)."""
    logits(folder)
    (folder / "NOTES.txt").write_text("fine-tuned on Tuesday", encoding="utf-8")
    pipe, _ = logits(folder)
    assert "read from the cache" in pipe.preparation.fast_path and len(files(store)) == 1


def test_a_cache_file_follows_the_umask(folder, store):
    """safetensors writes 0600 whatever the umask; a cache follows it as other files do (a cache built as root, in
    an image, is read by the user that runs it)."""
    previous = os.umask(0o022)
    try:
        logits(folder)
    finally:
        os.umask(previous)
    (path,) = files(store)
    assert path.stat().st_mode & 0o777 == 0o644


def test_scores_that_overflow_from_cached_codes_name_the_cache_file(folder, store):
    """Cached scales that are finite but absurd (a hand, or a bug, since the checksums): the CLI's "not finite"
    refusal blamed the checkpoint's weights; it names the cache file to delete (audit 43)."""
    from click.testing import CliRunner

    from coulisse.interfaces.cli import cli

    logits(folder)
    (path,) = files(store)
    rewrite_codes(path, lambda name, t: t * 1e30 if name.endswith(".scale") else t)
    result = CliRunner().invoke(cli, ["classify", "-m", str(folder), "-q", "int8", TEXTS[0]])
    assert result.exit_code == 1 and "are not finite" in result.output, result.output
    assert f"came from the weight cache: delete {path}" in result.output


def rewrite_codes(path, change) -> None:
    """The entry's tensors changed by `change(name, tensor)`, the key kept and the checksums recomputed."""
    from safetensors import safe_open

    tensors = load_file(path)
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    tensors = {name: change(name, tensor).contiguous() for name, tensor in tensors.items()}
    layers = {k.rsplit(".", 1)[0] for k in tensors}
    metadata["coulisse_crc32"] = json.dumps(cache.checksums(
        {n: (tensors[f"{n}.q"], tensors[f"{n}.scale"]) for n in layers}), sort_keys=True)
    save_file(tensors, str(path), metadata=metadata)


def negate_codes(path) -> None:
    """A deliberate edit: every code negated, the key kept and the checksums recomputed (audit 43)."""
    rewrite_codes(path, lambda name, t: -t if name.endswith(".q") else t)


ROOT_ONLY = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")


@pytest.mark.parametrize("exposure", ["world-writable file", "world-writable folder", "link",
                                      pytest.param("other owner", marks=ROOT_ONLY),
                                      pytest.param("other group, group-writable", marks=ROOT_ONLY)])
def test_a_cache_others_can_write_is_not_read(folder, store, caplog, exposure):
    """Whoever can write the cache decides the answers: a checksum catches a changed byte, not a hand that
    recomputes it. An entry or folder that another user owns or can write, or a link, is not read (said once),
    and the answers are those of codes computed fresh; a checkpoint's own codes negated there would flip them."""
    _, fresh = logits(folder)
    (path,) = files(store)
    negate_codes(path)
    if exposure == "world-writable file":
        path.chmod(0o666)
    elif exposure == "world-writable folder":
        path.parent.chmod(0o777)
    elif exposure == "link":
        target = path.with_name("elsewhere.bin")
        path.rename(target)
        path.symlink_to(target.name)
    elif exposure == "other owner":
        os.chown(path, 54321, os.getegid())
    else:
        os.chown(path, os.geteuid(), 54321)
        path.chmod(0o664)
    with caplog.at_level(logging.WARNING, logger="coulisse.engine.cache"):
        pipe, again = logits(folder)
        later, last = logits(folder)
    assert "read from the cache" not in pipe.preparation.fast_path
    assert np.array_equal(again, fresh) and np.array_equal(last, fresh)
    # a folder of this user's own: the entry was replaced by fresh codes, read from then on
    assert ("read from the cache" in later.preparation.fast_path) is (exposure != "world-writable folder")
    said = [r.getMessage() for r in caplog.records if "decides the model's answers" in r.getMessage()]
    assert len(said) == 1 and "COULISSE_CACHE" in said[0], said


def test_trust_on_windows_reads_no_owner_or_mode(tmp_path, monkeypatch):
    """Windows has no os.geteuid (the check raised AttributeError at the first int8 load there) and its st_mode
    says 0o666 for every writable file, which would read as "writable by every user" and never use the cache:
    there a link is still refused, owner and mode bits are not read (ACLs decide, and a profile's are private)."""
    entry = tmp_path / "entry.safetensors"
    entry.write_bytes(b"x")
    entry.chmod(0o666)
    (tmp_path / "link.safetensors").symlink_to(entry.name)
    assert cache.untrusted(entry) is not None  # POSIX: writable by every user
    monkeypatch.delattr(os, "geteuid")
    monkeypatch.delattr(os, "getegid")
    assert cache.untrusted(entry) is None
    assert cache.untrusted(tmp_path / "link.safetensors") == "is a symbolic link"


def test_a_relative_xdg_cache_home_is_ignored(monkeypatch, tmp_path):
    monkeypatch.delenv("COULISSE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert cache.cache_dir() == tmp_path / ".cache" / "coulisse"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "coulisse"


def test_two_threads_writing_one_entry_both_succeed(tmp_path, monkeypatch):
    """Pipelines built at once in two threads of a process write the same entry: their temporary files were
    named by the process alone, so one thread's rename took the other's file, which then warned that the cache
    could not be written (audit 41). Both writes are held open together here, so they always overlap."""
    import threading

    import safetensors.torch

    codes = {"layer": (torch.ones(4, 8, dtype=torch.int8), torch.ones(4))}
    key, path = {"format": 0, "weight_bits": 8}, tmp_path / "int8" / "entry.safetensors"
    together, real_save = threading.Barrier(2, timeout=30), safetensors.torch.save_file

    def save_and_wait(*args, **kwargs):
        real_save(*args, **kwargs)
        together.wait()

    monkeypatch.setattr(safetensors.torch, "save_file", save_and_wait)
    written = []
    workers = [threading.Thread(target=lambda: written.append(cache.save_codes(path, key, codes))) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert written == [True, True]
    loaded = cache.load_codes(path, key)
    assert loaded is not None and torch.equal(loaded["layer"][0], codes["layer"][0])
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_an_entry_keyed_by_every_file_of_the_folder_is_pruned(folder, store, monkeypatch):
    """Before the keys listed only the files a load reads, they listed every file of the folder (a README among
    them): the same checkpoint's entry under such a key goes when the new one is written (audit 48: it stayed,
    85 MB a base model, after every upgrade)."""
    (folder / "README.md").write_text("# a model card\n")
    make_key = cache.make_key
    monkeypatch.setattr(cache, "make_key", lambda files, *a: make_key(list(folder.iterdir()), *a))
    logits(folder)
    (older,) = files(store)
    monkeypatch.setattr(cache, "make_key", make_key)
    pipe, _ = logits(folder)
    assert "read from the cache" not in pipe.preparation.fast_path  # another key: quantized again
    assert len(files(store)) == 1 and files(store) != [older]
