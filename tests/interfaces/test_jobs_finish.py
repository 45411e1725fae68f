"""A job stopped during its last step: a Parquet output is assembled from its parts, put in place, and the parts
and the record removed (jobs/writers.py, runner.py). Killed at any point of it, the job is never reported as
interrupted once its output is complete, and `--resume` ends it cleanly: the output an uninterrupted run writes,
no parts, no record, no `.tmp`. A write that fails there (a full disk) leaves no half-written `.tmp`."""

from __future__ import annotations

import errno
import os

import pytest
from factory import write_reviews_csv

import coulisse
from coulisse.errors import InputError
from coulisse.interfaces.jobs import state as job_state
from coulisse.interfaces.jobs import writers
from coulisse.interfaces.jobs.lock import OutputError
from coulisse.interfaces.jobs.runner import JobInterrupted, JobOptions, classify_file

pytest.importorskip("pyarrow")


class Killed(BaseException):
    """What SIGKILL does to the job: it stops where it is, and no handler of the job runs."""


def make_csv(path, n: int = 40) -> None:
    write_reviews_csv(path, n, most=12)


@pytest.fixture(scope="module")
def pipe(tf_camembert_dir):
    return coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir), threads=1)


def run(pipe, source, output, **options):
    return classify_file(JobOptions(input=str(source), output=str(output), batch_rows=8, **options), lambda: pipe)


def leftovers(output) -> list[str]:
    return sorted(p.name for p in output.parent.iterdir() if p.name.startswith(output.name) and p != output)


def stop_in(patch, module, name: str, when, stop: BaseException, after: bool = False) -> None:
    """`module.name` raises `stop` on the call whose arguments `when` picks: before that call runs, or after."""
    real = getattr(module, name)

    def call(*args, **kwargs):
        if not when(*args):
            return real(*args, **kwargs)
        if after:
            real(*args, **kwargs)
        raise stop

    patch.setattr(module, name, call)


def is_parts(path, *rest) -> bool:
    return str(path).endswith(".parts")


def remove_a_part(patch, output, stop):
    def when(path, *rest):
        if is_parts(path):
            os.unlink(os.path.join(path, "part-000000.parquet"))  # rmtree got that far
            return True
        return False

    stop_in(patch, writers.shutil, "rmtree", when, stop)


# Where the job stops: the output assembled at .tmp (not yet said complete), said complete (not yet in place),
# in place, while the parts are removed, once they are.
POINTS = {
    "assembled": lambda patch, output, stop: stop_in(patch, job_state, "save", lambda path, state: state.finished,
                                                     stop),
    "said complete": lambda patch, output, stop: stop_in(patch, writers.os, "replace",
                                                         lambda src, dst: str(dst) == str(output), stop),
    "in place": lambda patch, output, stop: stop_in(patch, writers, "fsync_dir", lambda d: d == output.parent, stop,
                                                    after=True),
    "parts half removed": remove_a_part,
    "parts removed": lambda patch, output, stop: stop_in(patch, writers.shutil, "rmtree", is_parts, stop,
                                                         after=True),
}


@pytest.mark.parametrize("point", list(POINTS))
def test_a_kill_at_the_end_of_a_parquet_job_resumes_to_the_complete_output(pipe, tmp_path, monkeypatch, point):
    source, reference, output = tmp_path / "in.csv", tmp_path / "ref.parquet", tmp_path / "out.parquet"
    make_csv(source)
    run(pipe, source, reference)
    with monkeypatch.context() as patch:
        POINTS[point](patch, output, Killed())
        with pytest.raises(Killed):
            run(pipe, source, output)
    record = job_state.load(job_state.state_path(output))
    assert record is not None and record.rows == 40
    with pytest.raises(InputError) as refused:  # a plain rerun
        run(pipe, source, output)
    if point == "assembled":  # not in place, not said complete: an interrupted job, which --resume assembles again
        assert "holds an interrupted job" in str(refused.value)
    else:  # complete from here on: never called interrupted
        assert "interrupted" not in str(refused.value)
        assert f"{output} is complete (40 rows), but its job was stopped before it had removed its record" \
            in str(refused.value)
    summary = run(pipe, source, output, resume=True)
    assert (summary.rows, summary.classified) == (40, 40)
    assert output.read_bytes() == reference.read_bytes()
    assert leftovers(output) == []
    if point != "assembled":
        assert summary.describe().startswith(f"nothing left to do: {output} was complete (40 rows classified")


def test_ctrl_c_after_the_output_is_complete_says_so(pipe, tmp_path, monkeypatch):
    source, output = tmp_path / "in.csv", tmp_path / "out.parquet"
    make_csv(source)
    with monkeypatch.context() as patch:
        stop_in(patch, writers.shutil, "rmtree", is_parts, KeyboardInterrupt())
        with pytest.raises(JobInterrupted) as stopped:
            run(pipe, source, output)
    assert str(stopped.value) == (f"interrupted after {output} was complete (40 rows); rerun with --resume to finish "
                                  "tidying up (nothing is computed again).")
    run(pipe, source, output, resume=True)
    assert leftovers(output) == []


def test_a_full_disk_during_the_assembly_leaves_no_tmp(pipe, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    source, output = tmp_path / "in.csv", tmp_path / "out.parquet"
    make_csv(source)

    class FullDisk(pq.ParquetWriter):
        """The output's writer on a disk that fills at its second row group."""

        written = 0

        def write_table(self, table, *args, **kwargs):
            FullDisk.written += 1
            if FullDisk.written == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            super().write_table(table, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(pq, "ParquetWriter", FullDisk)  # the parts are written by pq.write_table, not through this
        with pytest.raises(OutputError, match=r"No space left on device \(ENOSPC\); the 40 rows committed"):
            run(pipe, source, output)
    assert FullDisk.written == 2
    assert leftovers(output) == ["out.parquet.coulisse-state.json", "out.parquet.parts"]  # no out.parquet.tmp
    assert not output.exists()
    run(pipe, source, output, resume=True)
    assert leftovers(output) == [] and output.exists()
