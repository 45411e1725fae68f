"""Operational failures are one line and exit 1 (issue 12, point 7, jobs side): an output that is a folder,
a missing or read-only folder (all before the model loads: the model path given does not exist, so a check
made after loading would have reported that instead), a full disk while writing (what was committed stays,
and --resume finishes the job byte-identical), and a closed stdout (quiet, no traceback)."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys

import pytest
from click.testing import CliRunner
from factory import write_reviews_csv

from coulisse.interfaces.cli import cli
from coulisse.interfaces.jobs import state as job_state
from coulisse.interfaces.jobs import writers
from coulisse.interfaces.jobs.lock import lock_path

MAIN = "from coulisse.interfaces.cli import main; main()"
ENV = {k: v for k, v in os.environ.items() if not k.startswith("COULISSE_")}
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def make_csv(path, n: int) -> None:
    write_reviews_csv(path, n, most=14)


@pytest.fixture
def runner():
    return CliRunner(env={k: None for k in os.environ if k.startswith("COULISSE_")})


def one_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def refused(runner, tmp_path, output, *extra) -> str:
    """Run a job whose model does not exist: the line must be about the output, not the model."""
    source = tmp_path / "in.csv"
    make_csv(source, 5)
    result = runner.invoke(cli, ["classify", "-m", str(tmp_path / "no-such-model"), "-i", str(source),
                                 "-o", str(output), "--quiet", *extra])
    assert result.exit_code == 1, result.output
    line = one_line(result.output)
    assert "no-such-model" not in line
    return line


def test_output_is_a_folder(runner, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    assert refused(runner, tmp_path, folder) == (
        f"Error: InputError: --output {folder} is a folder; name a file in it, e.g. {folder / 'labelled.csv'}.")
    assert list(folder.iterdir()) == []


def test_output_folder_is_missing(runner, tmp_path):
    output = tmp_path / "missing" / "out.csv"
    assert refused(runner, tmp_path, output) == (
        f"Error: InputError: --output {output}: the folder {output.parent} does not exist; create it first.")


@pytest.mark.skipif(ROOT, reason="root writes into a read-only folder anyway (the EROFS case below runs)")
def test_output_folder_is_read_only(runner, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        line = refused(runner, tmp_path, folder / "out.csv")
    finally:
        folder.chmod(0o755)
    assert line.startswith(f"Error: OutputError: cannot write in {folder} (for --output {folder / 'out.csv'}): "
                           "Permission denied (EACCES); make the folder writable")


def test_output_on_a_read_only_file_system(runner, tmp_path, monkeypatch):
    """A read-only mount, as the kernel reports it (EROFS) when the first file is created: the lock."""
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if str(path).endswith(".coulisse-lock") and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    output = tmp_path / "out.csv"
    assert refused(runner, tmp_path, output) == (
        f"Error: OutputError: cannot write in {tmp_path} (for --output {output}): Read-only file system "
        "(EROFS); make the folder writable or write somewhere else.")
    assert not output.exists()


def test_a_read_only_folder_is_refused_though_a_lock_file_was_left_there(runner, tmp_path, monkeypatch):
    """A lock file left by an earlier run opens again in a read-only folder (no file is created): the folder was
    then not refused before the model loaded, and the job wrote a chunk it could not commit (audit 44). The
    folder is probed with a new file of its own."""
    output = tmp_path / "out.csv"
    lock_path(output).write_text("4242\n")
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # a read-only mount: what exists opens, nothing new is made
        if flags & os.O_CREAT and not os.path.exists(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    def no_unlink(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.setattr(os, "unlink", no_unlink)
    assert refused(runner, tmp_path, output) == (
        f"Error: OutputError: cannot write in {tmp_path} (for --output {output}): Read-only file system "
        "(EROFS); make the folder writable or write somewhere else.")
    assert not output.exists()


@pytest.mark.skipif(ROOT, reason="root writes into a read-only file anyway")
def test_output_file_is_read_only(runner, tmp_path):
    output = tmp_path / "out.csv"
    output.write_text("x\n")
    output.chmod(0o444)
    assert refused(runner, tmp_path, output, "--overwrite") == (
        f"Error: OutputError: --output {output} is read-only; make it writable or write somewhere else.")


# -- a full disk -------------------------------------------------------------------------------------------

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fail_output(monkeypatch, fmt):
    """The third chunk's write fails halfway (CSV: half its bytes reach the file; Parquet: a torn part)."""
    calls = []
    if fmt == "csv":
        def commit(self, rows, preds):
            calls.append(1)
            if len(calls) == 3:
                data = self.encoder.encode(rows, preds)
                self.file.write(data[: len(data) // 2])
                self.file.flush()
                raise ENOSPC
            return real(self, rows, preds)

        real = writers.FileSink.commit
        monkeypatch.setattr(writers.FileSink, "commit", commit)
    else:
        def commit(self, rows, preds):
            calls.append(1)
            if len(calls) == 3:
                (self.parts / f"tmp-{self.count:06d}.parquet").write_bytes(b"PAR1 torn")
                raise ENOSPC
            return real(self, rows, preds)

        real = writers.ParquetSink.commit
        monkeypatch.setattr(writers.ParquetSink, "commit", commit)


def _fail_record(monkeypatch, fmt):
    """The third chunk's output is written, then its record cannot be: the tmp file fills the disk."""
    calls = []
    real = job_state.write_atomic

    def write_atomic(path, data):
        calls.append(1)
        if len(calls) == 4:  # the fresh record, then chunks 1, 2, 3
            path.with_name(path.name + ".tmp").write_bytes(data[:10])
            raise ENOSPC
        return real(path, data)

    monkeypatch.setattr(job_state, "write_atomic", write_atomic)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("fail", [_fail_output, _fail_record], ids=["output", "record"])
def test_disk_full_keeps_what_was_committed(runner, tf_camembert_dir, tmp_path, monkeypatch, fmt, fail):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    source, reference, output = tmp_path / "in.csv", tmp_path / f"ref.{fmt}", tmp_path / f"out.{fmt}"
    make_csv(source, 60)
    args = ["classify", "-m", str(tf_camembert_dir), "-i", str(source), "-b", "8", "--quiet"]
    assert runner.invoke(cli, [*args, "-o", str(reference)]).exit_code == 0
    with monkeypatch.context() as patch:
        fail(patch, fmt)
        result = runner.invoke(cli, [*args, "-o", str(output)])
    assert result.exit_code == 1, result.output
    assert one_line(result.output) == (
        f"Error: OutputError: cannot write {output}: No space left on device (ENOSPC); the 16 rows committed "
        "before are kept: free some space and rerun with --resume.")
    assert job_state.load(job_state.state_path(output)).rows == 16
    assert not lock_path(output).exists()
    result = runner.invoke(cli, ["classify", "-o", str(output), "--resume", "--quiet"])
    assert result.exit_code == 0, result.output
    assert output.read_bytes() == reference.read_bytes()


@pytest.mark.slow
def test_a_real_write_failure_in_a_real_process(runner, tf_camembert_dir, tmp_path):
    """The kernel refuses the write (RLIMIT_FSIZE: EFBIG, as ENOSPC would be refused) in a real process:
    exit 1, one line, nothing printed again at exit; --resume without the limit finishes byte-identical.
    The uninterrupted reference is the same command run in this process (the failing and the resumed jobs
    are the real processes under test): one torch import and model load fewer."""
    source, reference, output = tmp_path / "in.csv", tmp_path / "ref.csv", tmp_path / "out.csv"
    make_csv(source, 400)
    command = ["classify", "-m", str(tf_camembert_dir), "-i", str(source), "-b", "8", "-t", "1", "--quiet"]
    args = [sys.executable, "-c", MAIN, *command]
    done = runner.invoke(cli, [*command, "-o", str(reference)])
    assert done.exit_code == 0, done.output
    limit = reference.stat().st_size // 3

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    failed = subprocess.run([*args, "-o", str(output)], env=ENV, capture_output=True, timeout=300,
                            preexec_fn=small_files)
    assert failed.returncode == 1, failed.stderr
    line = one_line(failed.stderr.decode())
    rows = job_state.load(job_state.state_path(output)).rows
    assert 0 < rows < 400
    assert line == (f"Error: OutputError: cannot write {output}: File too large (EFBIG); the {rows:,} rows "
                    "committed before are kept: fix the cause and rerun with --resume.")
    assert output.stat().st_size <= limit
    resumed = subprocess.run([sys.executable, "-c", MAIN, "classify", "-o", str(output), "--resume", "-t", "1",
                              "--quiet"], env=ENV, capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert output.read_bytes() == reference.read_bytes()


# -- a closed stdout ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_stdout_closed_early_by_the_reader_of_a_job(tf_camembert_dir, tmp_path):
    """`coulisse classify -i in.csv | head -1`: the job stops quietly (exit 1, as click exits on EPIPE),
    no traceback, no lock or state left (stdout has none)."""
    source = tmp_path / "in.csv"
    make_csv(source, 3000)
    proc = subprocess.Popen([sys.executable, "-c", MAIN, "classify", "-m", str(tf_camembert_dir), "-i", str(source),
                             "-b", "64", "-t", "1", "--quiet"], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    assert proc.stdout.readline().startswith(b'{"id": "0"')
    proc.stdout.close()  # what head does after its line
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 1
    assert err == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_stdout_closed_before_the_single_text_command_writes(tf_camembert_dir, extra):
    """`coulisse classify "text" | head -0`."""
    proc = subprocess.Popen([sys.executable, "-c", MAIN, "classify", "-m", str(tf_camembert_dir), *extra,
                             "un film génial", "quel ennui"], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 1
    assert err == b""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("job", [True, False], ids=["job", "single-text"])
def test_stdout_on_a_full_device(tf_camembert_dir, tmp_path, job):
    """stdout redirected to a full disk (/dev/full: every write fails with ENOSPC, from the kernel)."""
    source = tmp_path / "in.csv"
    make_csv(source, 50)
    what = ["-i", str(source), "--quiet"] if job else ["un film génial"]
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([sys.executable, "-c", MAIN, "classify", "-m", str(tf_camembert_dir), "-t", "1",
                               *what], env=ENV, stdout=full, stderr=subprocess.PIPE, timeout=300)
    assert proc.returncode == 1
    line = one_line(proc.stderr.decode())
    if job:
        assert line == ("Error: OutputError: cannot write to stdout: No space left on device (ENOSPC); 0 rows "
                        "were written.")
    else:
        assert line.startswith("Error: ") and "No space left on device (ENOSPC)" in line
