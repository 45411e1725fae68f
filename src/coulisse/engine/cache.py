"""The weight cache: int8 codes computed once per checkpoint, CPU and coulisse version, then read back.

Quantizing a base-size encoder's weights (per-channel max, divide, round, clamp: five passes over
340 MB of fp32) takes ~2 s on a 2-core AVX2 machine, most of an int8 cold start; reading the codes
back (85 MB of int8, memory-mapped) takes a fraction of that. What is cached are the codes and
scales, not oneDNN's prepacked layout: that is an opaque tensor torch cannot save, and its reorder
(~0.5 s there) runs at every load.

Where: `$COULISSE_CACHE` (a folder; `0` or `off` turns the cache off), else `$XDG_CACHE_HOME/coulisse`,
else `~/.cache/coulisse`. One safetensors file per key under `int8/`. Safe to delete at any time: a
missing, unreadable or mismatched file is rebuilt (logged), never an error. Whoever writes the cache decides the
model's answers: an entry or `int8/` folder that another user (root excepted) owns or can write, or a link, is
not read (`untrusted`). A new entry replaces those it
supersedes, written for the same checkpoint files (by path), CPU and width under another key: a checkpoint
rewritten in place (each epoch of a fine-tuning) or an upgrade of coulisse or torch leaves no stale codes behind,
where the cache would otherwise grow by the codes' size at each (85 MB for a base model). Other checkpoints, and
other CPUs sharing a home folder, keep theirs.

The key, hashed into the file name and stored whole in the file's metadata (checked on read):

- each file of the checkpoint folder: its resolved path, size, mtime, inode and ctime, plus a
  sampled content fingerprint (16 blocks of 4 KiB at fixed offsets). A full content hash would cost
  as much as the quantization it saves (~1 s per 400 MB). The stat fields change on any write
  through the file system: ctime cannot be set back by `touch` or `cp -p`, so a checkpoint rewritten
  in place with the same size and mtime still changes it; the sampled blocks catch a file system that
  keeps no reliable times. Hub checkpoints are content-addressed blobs, so their resolved path names
  their hash too.
- the CPU features that choose the codes (`Features.key`) and the weight width,
- the coulisse version and the cache format (`FORMAT`, raised whenever the codes' layout changes: a development
  checkout keeps its version between commits, so the format is what guards the layout there).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

FORMAT = 1
SAMPLES, BLOCK = 16, 4096


def cache_dir() -> Path | None:
    """The cache folder, or None when `COULISSE_CACHE` turns the cache off (or, unset, where this process has no
    home folder and no XDG_CACHE_HOME: said once)."""
    value = os.environ.get("COULISSE_CACHE")
    if value is not None and value.strip().lower() in ("0", "off", "false", "no", ""):
        return None
    base = os.environ.get("XDG_CACHE_HOME", "")
    # the XDG spec: a relative path is invalid and ignored (it would put the cache in each working directory)
    if value:
        folder = os.path.expanduser(value)
    elif os.path.isabs(base):
        return Path(base) / "coulisse"
    else:
        folder = os.path.join(os.path.expanduser("~"), ".cache", "coulisse")
    if folder.startswith("~"):  # no HOME and no passwd entry for this uid (`env -i`, a container's bare uid)
        _say_no_home()
        return None
    return Path(folder)


@functools.cache
def _say_no_home() -> None:
    log.warning("the cache is off: this process has no home folder (HOME is unset and its user has no passwd "
                "entry); set COULISSE_CACHE to a writable folder to keep int8 codes and kernel timings")


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("coulisse")
    except PackageNotFoundError:
        return "unknown"


def fingerprint(path: Path) -> dict:
    """What identifies one file's content without reading it all (see the module's docstring)."""
    try:
        real = path.resolve()
    except RuntimeError as e:  # a link loop on Python 3.11-3.12 (3.13 raises OSError): the key cannot be read
        raise OSError(str(e)) from None
    st = real.stat()
    digest = hashlib.sha256()
    with open(real, "rb") as f:
        for i in range(SAMPLES):
            f.seek(st.st_size * i // SAMPLES)
            digest.update(f.read(BLOCK))
        f.seek(max(st.st_size - BLOCK, 0))
        digest.update(f.read(BLOCK))
    return {"path": str(real), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "inode": st.st_ino, "device": st.st_dev, "sample_sha256": digest.hexdigest()}


def make_key(files: Iterable[Path], features_key: str, weight_bits: int) -> dict:
    files = sorted(p for p in files if p.is_file())
    return {"format": FORMAT, "coulisse": version(), "torch": torch.__version__, "cpu": features_key,
            "weight_bits": weight_bits, "files": [fingerprint(p) for p in files]}


def key_path(folder: Path, key: dict) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return folder / "int8" / f"{name}.safetensors"


def untrusted(path: Path) -> str | None:
    """Why the cache entry or folder at `path` must not be read, or None. Whoever can write it decides the model's
    answers (a checksum catches a changed byte, not a hand that recomputes it, audit 43), so it must be a plain file
    or folder, not a link, owned by this user or by root (a cache built as root, in an image), and writable by no one
    else: not by every user, nor by a group other than this user's own (umask 002's private group)."""
    try:
        st = path.lstat()
    except OSError:
        return None  # absent: nothing to trust yet
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not hasattr(os, "geteuid"):  # Windows: no owner or mode bits in st (ACLs decide; the profile's are private)
        return None
    if st.st_uid not in (os.geteuid(), 0):
        return f"belongs to another user (uid {st.st_uid})"
    if st.st_mode & 0o002:
        return f"is writable by every user (mode {st.st_mode & 0o777:o})"
    if st.st_mode & 0o020 and st.st_gid != os.getegid():
        return f"is writable by group {st.st_gid} (mode {st.st_mode & 0o777:o})"
    return None


_said_untrusted: set[Path] = set()


def _refuse_untrusted(path: Path, doing: str, entry: bool = True) -> bool:
    """Whether the folder, or the entry too, is untrusted (then said once per path and process)."""
    for where in (path.parent, path) if entry else (path.parent,):
        reason = untrusted(where)
        if reason:
            if where not in _said_untrusted:
                _said_untrusted.add(where)
                log.warning("weight cache %s %s: %s, since whoever can write it decides the model's answers; "
                            "quantizing at load. Give each user a cache folder of their own (COULISSE_CACHE), "
                            "or `chmod go-w` it.", where, reason, doing)
            return True
    return False


def load_codes(path: Path, key: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    """The codes stored under `key`, or None (absent, untrusted, unreadable, or for another key: logged)."""
    if _refuse_untrusted(path, "not read"):
        return None
    if not path.is_file():
        return None
    if not os.access(path, os.R_OK):
        log.warning("weight cache %s is not readable by this user (mode %o): quantizing at load; give each user "
                    "a cache of their own (COULISSE_CACHE) or make the file readable", path,
                    path.stat().st_mode & 0o777)
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            stored = json.loads((f.metadata() or {}).get("coulisse_key", "null"))
            if stored != key:
                log.info("weight cache %s was written for another checkpoint, CPU or version: rebuilding", path)
                return None
            names = {n.rsplit(".", 1)[0] for n in f.keys()}  # noqa: SIM118 (safe_open is no mapping)
            codes = {n: (f.get_tensor(f"{n}.q"), f.get_tensor(f"{n}.scale")) for n in names}
            sums = json.loads((f.metadata() or {}).get("coulisse_crc32", "null"))
    except Exception as e:  # a truncated or garbled file: rebuild it, never fail the load for a cache
        log.warning("weight cache %s is unreadable (%s): rebuilding it", path, e.__class__.__name__)
        return None
    if sums is None:  # written by a version before checksums (session 41): rebuilt once, with them
        log.info("weight cache %s has no checksums (an earlier coulisse wrote it): rebuilding it", path)
        return None
    if sums != checksums(codes):  # bytes changed on disk since they were written: never computed with
        log.warning("weight cache %s does not match its checksums (changed on disk): rebuilding it", path)
        return None
    bound = 2 ** (key["weight_bits"] - 1) - 1
    for name, (q, scale) in codes.items():
        if (q.dtype != torch.int8 or q.dim() != 2 or scale.shape != (q.shape[0],) or q.min() < -bound or q.max() > bound
                or not bool((scale > 0).all() and scale.isfinite().all())):
            log.warning("weight cache %s holds invalid codes for %s: rebuilding it", path, name)
            return None
    return codes


def save_codes(path: Path, key: dict, codes: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> bool:
    """Write atomically (a temporary file renamed): a crash leaves the old file or none, never half of one.
    Returns whether the file was written."""
    from safetensors.torch import save_file

    tensors = {}
    for name, (q, scale) in codes.items():
        tensors[f"{name}.q"], tensors[f"{name}.scale"] = q.contiguous(), scale.contiguous()
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if _refuse_untrusted(path, "not written", entry=False):  # an untrusted entry is replaced, not read
            return False
        # one new name per writer (O_EXCL, not following a link): two threads of a process, pipelines built at
        # once, each write their own
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        save_file(tensors, str(tmp), metadata={"coulisse_key": json.dumps(key, sort_keys=True),
                                               "coulisse_crc32": json.dumps(checksums(codes), sort_keys=True)})
        with open(tmp, "rb+") as f:  # on disk before it takes the name: a crash never leaves a torn file there
            os.fsync(f.fileno())
        mode = _file_mode()
        if mode is not None:  # safetensors writes 0600 whatever the umask; a cache follows it like other files
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except Exception as e:  # a read-only or full disk (OSError, or safetensors' own error type): the next
        # start quantizes again, nothing worse; a cache never fails the load
        log.warning("could not write the weight cache %s (%s); set COULISSE_CACHE to a writable folder "
                    "or to 0", path, e)
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        return False
    log.info("weight cache written: %s", path)
    prune_superseded(path, key)
    return True


def _identity(key: dict) -> tuple[str, int, frozenset[str]]:
    """What two keys of the same checkpoint and CPU share whatever the files' contents and the versions: the CPU,
    the width and the files' paths (`_same_checkpoint` compares those)."""
    return key["cpu"], key["weight_bits"], frozenset(f["path"] for f in key["files"])


def _same_checkpoint(a: tuple[str, int, frozenset[str]], b: tuple[str, int, frozenset[str]]) -> bool:
    """Same CPU and width, and one key's files all among the other's: the same files, or the same checkpoint keyed
    by an older version that listed every file of its folder (README.md, .gitattributes), where keys now list
    the files a load reads (audit 48: those entries were never pruned)."""
    return a[:2] == b[:2] and bool(a[2]) and bool(b[2]) and (a[2] <= b[2] or b[2] <= a[2])


def prune_superseded(path: Path, key: dict) -> int:
    """Remove the entries that the one just written at `path` supersedes (the module's docstring); returns how
    many. An entry whose key cannot be read is left alone: a read of it rebuilds or ignores it."""
    from safetensors import safe_open

    try:
        mine, removed = _identity(key), 0
    except (KeyError, TypeError):  # a key without the checkpoint's files (a caller's own): nothing to compare
        return 0
    for other in path.parent.glob("*.safetensors"):
        if other == path:
            continue
        try:
            with safe_open(str(other), framework="pt") as f:
                stored = json.loads((f.metadata() or {}).get("coulisse_key", "null"))
            superseded = _same_checkpoint(_identity(stored), mine)
        except Exception:  # not ours, truncated, another layout: not this function's to judge
            continue
        if superseded:
            with contextlib.suppress(OSError):  # another process removed it first, or a read-only folder
                other.unlink()
                removed += 1
    if removed:
        log.info("weight cache: removed %d entr%s for the same checkpoint files under an older key", removed,
                 "y" if removed == 1 else "ies")
    return removed


def checksums(codes: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, int]:
    """A CRC-32 of each layer's codes and scales (~0.1 s over a base model's 85 MB): a byte changed in the file
    since it was written (a disk, a hand) would otherwise give other answers without a word (audit 41)."""
    import zlib

    return {name: zlib.crc32(scale.contiguous().numpy().tobytes(), zlib.crc32(q.contiguous().numpy().data))
            for name, (q, scale) in codes.items()}


def _file_mode() -> int | None:
    """0o666 less the process's umask, read from /proc (os.umask would change it for every thread a moment)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def valid_for(codes: dict, expected: dict[str, tuple[int, int]]) -> bool:
    """Whether `codes` has exactly the layers `expected` names, with their `(out, in)` shapes."""
    return codes.keys() == expected.keys() and all(tuple(codes[n][0].shape) == s for n, s in expected.items())
