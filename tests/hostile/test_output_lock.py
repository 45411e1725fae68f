"""One writer per output (issue 12, point 4): a second job on the same output — a plain run, `--resume` or
`--overwrite` while the first runs — is refused in one line naming the pid that holds it, before its model
loads, and the first job's output equals a single run's; a lock left by a process killed with SIGKILL is
taken over by the next `--resume`, which finishes byte-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner
from factory import write_reviews_csv
from job_process import start_job, wait_rows

from coulisse.interfaces.cli import cli
from coulisse.interfaces.jobs.lock import OutputLock, OutputLockedError, lock_path
from coulisse.interfaces.jobs.state import state_path

MAIN = "from coulisse.interfaces.cli import main; main()"
ENV = {k: v for k, v in os.environ.items() if not k.startswith("COULISSE_")}


def make_csv(path, n: int) -> None:
    write_reviews_csv(path, n, most=14)


def one_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    return lines[0]


def test_a_held_lock_refuses_every_second_writer(tmp_path):
    """The lock held here (this process's pid): a plain run, --overwrite and --resume are each refused
    in one line naming the pid; the model path does not exist, so a refusal after loading would have
    said so instead; the output and its state are untouched."""
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    make_csv(source, 10)
    output.write_bytes(b"id,text,label,score,error\n")
    state_path(output).write_text('{"version": 2, "rows": 0, "key": {"input": "elsewhere.csv"}}')
    runner = CliRunner(env={k: None for k in os.environ if k.startswith("COULISSE_")})
    base = ["classify", "-m", str(tmp_path / "no-such-model"), "-i", str(source), "-o", str(output), "--quiet"]
    with OutputLock(str(output)):
        assert lock_path(output).read_text() == f"{os.getpid()}\n"
        for extra in ([], ["--overwrite"], ["--resume"]):
            result = runner.invoke(cli, base + extra)
            assert result.exit_code == 1, result.output
            line = one_line(result.output)
            assert line == (f"Error: OutputLockedError: {output} is being written by another coulisse job "
                            f"(pid {os.getpid()}, lock out.csv.coulisse-lock); wait for it to end, or stop it "
                            "and rerun with --resume."), extra
    assert output.read_bytes() == b"id,text,label,score,error\n"
    assert json.loads(state_path(output).read_text())["key"] == {"input": "elsewhere.csv"}
    assert not lock_path(output).exists()  # removed on release


def test_lock_semantics(tmp_path):
    output = str(tmp_path / "out.csv")
    first = OutputLock(output)
    first.acquire()
    with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
        OutputLock(output).acquire()
    first.release()
    assert not lock_path(output).exists()
    with OutputLock(output):  # free again
        pass
    with OutputLock("-"):  # stdout: nothing to lock
        assert not (tmp_path / "-.coulisse-lock").exists()


def test_a_lock_file_without_a_lock_is_taken_over(tmp_path, caplog):
    """What SIGKILL leaves: the file with the dead job's pid, and no lock (the kernel dropped it)."""
    output = str(tmp_path / "out.csv")
    lock_path(output).write_text("4194302\n")
    with caplog.at_level("WARNING"), OutputLock(output):
        assert lock_path(output).read_text() == f"{os.getpid()}\n"
    assert "taking over the lock of pid 4194302, which ended without releasing it" in caplog.text


@pytest.mark.parametrize("third", [False, True])
def test_a_lock_file_removed_between_open_and_lock_is_not_trusted(tmp_path, monkeypatch, third):
    """Job A releases (unlinks, unlocks) after job B opened A's file and before B locks it, and job C
    (`third`) creates and locks a new one meanwhile. B's lock on the unlinked file would exclude no one:
    B must lock the file at the path, so it gets the lock when C is absent and is refused when C holds it."""
    import fcntl

    from coulisse.interfaces.jobs import lock as lock_module

    output = str(tmp_path / "out.csv")
    a, c = OutputLock(output), OutputLock(output)
    a.acquire()
    calls = []
    real_flock = fcntl.flock

    def flock(fd, op):
        calls.append(fd)
        if len(calls) == 1:  # B's first flock: A lets go right before it, C may come in
            a.release()
            if third:
                c.acquire()
        return real_flock(fd, op)

    monkeypatch.setattr(lock_module.fcntl, "flock", flock)
    b = OutputLock(output)
    if third:
        with pytest.raises(OutputLockedError):
            b.acquire()
        assert c.fd is not None and os.fstat(c.fd).st_ino == os.stat(lock_path(output)).st_ino
        c.release()
    else:
        b.acquire()
        assert os.fstat(b.fd).st_ino == os.stat(lock_path(output)).st_ino
        b.release()
    assert len(calls) == 3 if third else 2  # B's try on the unlinked file, [C's,] B's on the file at the path


def _start(model, source, output, *extra):
    return start_job('classify', model, source, output, *extra)


def _wait_rows(proc, output, rows: int, timeout: float = 300) -> int:
    return wait_rows(proc, output, rows, timeout)


@pytest.mark.slow
def test_two_real_jobs_on_one_output(tf_camembert_dir, tmp_path):
    """Job A runs; B (plain, --overwrite, --resume) is refused naming A's pid, and A's output equals an
    uninterrupted run's. Then A is killed with SIGKILL while holding the lock: the lock file stays, with
    A's pid, but the lock went with A; --resume takes it over and finishes byte-identical."""
    source, reference, output = tmp_path / "in.csv", tmp_path / "ref.csv", tmp_path / "out.csv"
    killed = tmp_path / "killed.csv"
    make_csv(source, 1200)
    uninterrupted = _start(tf_camembert_dir, source, reference)
    a = _start(tf_camembert_dir, source, output)
    _wait_rows(a, output, 40)
    runner = CliRunner(env={k: None for k in os.environ if k.startswith("COULISSE_")})
    for extra in ([], ["--overwrite"], ["--resume"]):  # in this process: refused in milliseconds
        b = runner.invoke(cli, ["classify", "-m", str(tf_camembert_dir), "-i", str(source), "-o", str(output),
                                "-b", "8", "--quiet", *extra])
        assert b.exit_code == 1, b.output
        assert f"is being written by another coulisse job (pid {a.pid}," in one_line(b.output), extra
    assert a.poll() is None  # A was running all along
    assert a.wait(timeout=600) == 0, a.communicate()
    assert uninterrupted.wait(timeout=600) == 0, uninterrupted.communicate()
    assert output.read_bytes() == reference.read_bytes()
    assert not lock_path(output).exists() and not state_path(output).exists()

    victim = _start(tf_camembert_dir, source, killed)
    _wait_rows(victim, killed, 80)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert lock_path(killed).read_text() == f"{victim.pid}\n"  # left behind, but no longer locked
    final = subprocess.run([sys.executable, "-c", MAIN, "classify", "-o", str(killed), "--resume", "-t", "1",
                            "--quiet"], env=ENV, capture_output=True, timeout=600)
    assert final.returncode == 0, final.stderr
    assert f"taking over the lock of pid {victim.pid}".encode() in final.stderr
    assert killed.read_bytes() == reference.read_bytes()
    assert not lock_path(killed).exists()


@pytest.mark.parametrize("link", ["same path", "hard link", "symlink"])
def test_an_output_that_is_the_input_under_another_name_is_refused(tmp_path, link):
    """`-o` naming the input itself, or a hard link or symlink to it: refused before anything is opened (the
    input's bytes stay), with the message the same path gets, not a later "the input changed"."""
    from coulisse.errors import InputError
    from coulisse.interfaces.jobs.runner import JobOptions, prepare_output

    source = tmp_path / "in.csv"
    source.write_text("text\nbon film\n", encoding="utf-8")
    output = {"same path": tmp_path / "." / "in.csv", "hard link": tmp_path / "h.csv",
              "symlink": tmp_path / "s.csv"}[link]
    if link == "hard link":
        os.link(source, output)
    elif link == "symlink":
        output.symlink_to(source)
    for overwrite in (False, True):
        with pytest.raises(InputError, match="is the input file"):
            prepare_output(JobOptions(input=str(source), output=str(output), overwrite=overwrite))
    assert source.read_text(encoding="utf-8") == "text\nbon film\n"
    assert not prepare_output(JobOptions(input=str(source), output=str(tmp_path / "other.csv")))


def test_without_fcntl_the_job_runs_unlocked_and_says_so_once(tmp_path, monkeypatch, caplog):
    """Windows has no fcntl: the job warns and runs (it said so twice per job, once when it probed the lock
    before loading the model and once when it took it)."""
    import logging

    from coulisse.interfaces.jobs import lock

    monkeypatch.setattr(lock, "fcntl", None)
    monkeypatch.setattr(lock, "_SAID_UNLOCKED", set())
    output = str(tmp_path / "out.csv")
    with caplog.at_level(logging.WARNING, logger="coulisse.interfaces.jobs.lock"):
        for _ in range(2):
            with OutputLock(output) as held:
                assert held.fd is None
    said = [r.getMessage() for r in caplog.records if "no file locks" in r.getMessage()]
    assert len(said) == 1 and output in said[0]
