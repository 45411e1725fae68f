"""One writer per output: the checks on an output path and its exclusive lock, before the model loads.

The lock is `fcntl.flock` on `<output>.coulisse-lock`, held from before the resume state is read until
the job's last write, and covering the output, its `.parts/` folder and its state record. A second job
on the same output (`--resume` or `--overwrite` while the first runs, or the same command twice) is
refused in one line that names the pid written in the lock file. The kernel releases a flock when its
process dies, however it dies, so a lock left by a process killed with SIGKILL is free: the next job takes
it over (and says so), with no pid to probe and no stale-lock timeout to guess (pid files get both wrong:
pids are reused, and a killed process cannot remove its file). Linux emulates flock over NFS with POSIX
locks, so two machines sharing a folder exclude each other too; where a file system has no locks at all,
the job warns and goes on unlocked. stdout ("-") needs no lock.

The lock file is removed on release. A job that opened it just before and locks it just after would then
hold a lock on a file no longer at the path, so `acquire` checks that the file it locked is still the one
at the path, and starts again otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
from pathlib import Path

from coulisse.errors import CoulisseError, InputError

try:
    import fcntl
except ImportError:  # not a POSIX system
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_SAID_UNLOCKED: set[str] = set()


class OutputError(CoulisseError):
    """The output cannot be written: a read-only or missing folder, a full disk, a path that is a folder."""


class OutputLockedError(OutputError):
    """Another job holds the output's lock."""


def lock_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".coulisse-lock")


def check_output_path(output: str | Path, flag: str = "--output", example: str = "labelled.csv") -> None:
    """What makes an output file unwritable before anything is written: it is a folder, its folder is missing or
    takes no new file (the record, the parts and the lock go there: probed, since a lock file left by an earlier
    run opens in a read-only folder, and the job then loaded its model and wrote a chunk first, audit 44), or it
    is read-only."""
    path = Path(output)
    folder = path.absolute().parent
    if path.is_dir():
        raise InputError(f"{flag} {output} is a folder; name a file in it, e.g. {path / example}.")
    if not folder.is_dir():
        raise InputError(f"{flag} {output}: the folder {folder} does not exist; create it first.")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{flag} {output} is read-only; make it writable or write somewhere else.")
    check_writable(output, flag)


def unwritable(folder: Path, flag: str, given: str | Path, error: OSError) -> OutputError:
    """The one line for a folder that takes no new file, naming the path the user gave (never a temporary one)."""
    # a permission or a read-only mount the user can change; anything else (/proc's ENOENT, a full disk) not
    fix = ("make the folder writable or write somewhere else" if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
           else "write somewhere else")
    return OutputError(f"cannot write in {folder} (for {flag} {given}): {error.strerror} "
                       f"({errno.errorcode.get(error.errno, error.errno)}); {fix}.")


def check_writable(given: str | Path, flag: str, folder: bool = False) -> None:
    """Before any work, that `given` (a file, or with `folder` a folder to write into) can be written: the
    folder it goes in, or the nearest one that exists when folders are still to be made, takes a new file
    (created and removed: a permission check alone misses read-only mounts and /proc)."""
    target = Path(given).expanduser().absolute()
    where = target if folder else target.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        raise OutputError(f"cannot write {flag} {given}: {where} is a file, not a folder; write somewhere else.")
    try:
        fd, probe = tempfile.mkstemp(dir=where, prefix=".coulisse-probe-")
    except OSError as e:
        raise unwritable(where, flag, given, e) from None
    os.close(fd)
    os.unlink(probe)


class OutputLock:
    """`with OutputLock(output):` holds the output's lock or raises OutputLockedError; "-" locks nothing."""

    def __init__(self, output: str, said: str | None = None, then: str = "rerun with --resume"):
        """`said`: what the job writes, as its refusal names it (a `--ray` job's folder, whose lock is a file in
        it); `then`: how to go on once the other job has stopped."""
        self.output = output
        self.path = lock_path(output)
        self.said, self.then = said or output, then
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        if self.output != "-":
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if fcntl is None:  # Windows: said once per output, though a job probes its lock before taking it
            if self.output not in _SAID_UNLOCKED:
                _SAID_UNLOCKED.add(self.output)
                log.warning("no file locks on this system (no fcntl): nothing stops a second job writing %s",
                            self.output)
            return
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise OutputLockedError(
                    f"{self.said} is being written by another coulisse job (pid {holder or 'unknown'}, lock "
                    f"{self.path.name}); wait for it to end, or stop it and {self.then}.") from None
            except OSError as e:
                os.close(fd)
                if e.errno not in UNSUPPORTED:
                    raise
                log.warning("the file system of %s has no file locks (%s): nothing stops a second job "
                            "writing it", self.output, e.strerror)
                return
            if self._still_at_path(fd):
                break
            os.close(fd)  # its holder removed it between our open and our lock: lock the file there now
        previous = _read_pid(fd)
        if previous and previous != str(os.getpid()):  # our own: the probe before the model loaded left it
            log.warning("%s: taking over the lock of pid %s, which ended without releasing it", self.output,
                        previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as e:
            raise unwritable(self.path.absolute().parent, "--output", self.output, e) from None

    def _still_at_path(self, fd: int) -> bool:
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            return False
        opened = os.fstat(fd)
        return (at_path.st_dev, at_path.st_ino) == (opened.st_dev, opened.st_ino)

    def release(self) -> None:
        if self.fd is None:
            return
        # Removed while still locked (see the module's docstring); one left behind (a read-only folder
        # since) is free once closed, and the next job takes it over.
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""
