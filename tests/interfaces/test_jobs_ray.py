"""Corpus jobs on a Ray cluster: `classify --ray` writes the single-machine job's rows, shard by shard, and a
rerun after a killed actor or a killed driver ends with every row exactly once; `coulisse.ray.Predictor`
labels a `ray.data.Dataset` the same way, and `coulisse.ray.embed` gives `coulisse embed -i`'s vectors.

One local cluster (`ray start --head`, 2 CPUs, a 100 MiB object store) serves the module; this process
joins it as a driver, and the CLI runs in subprocesses against its address.
"""

from __future__ import annotations

import glob
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from coulisse.errors import InputError
from coulisse.interfaces.cli import cli
from coulisse.interfaces.jobs import distributed
from coulisse.interfaces.jobs.distributed import RayOptions

ray = pytest.importorskip("ray")
from coulisse.interfaces.jobs.cluster import ClusterError  # noqa: E402  (imports ray)

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

MODEL = str(Path(__file__).parents[1] / "fixtures" / "tf_camembert")
MAIN = "from coulisse.interfaces.cli import main; main()"
WORDS = ["film", "acteur", "scénario", "génial", "nul", "ennuyeux", "magnifique", "histoire", "musique", "fin"]
# Same chunks, same code, one thread on both sides: any difference is the order of float32 sums, a few ulps
# of a logit (~1e-7), which moves a probability in [0, 1] by less than 1e-6.
SCORE_TOLERANCE = 1e-6
# Ray 2.60 turns token authentication on once a token file exists; a throwaway local cluster needs none.
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    """The Hugging Face cache the cluster's workers read (HF_HUB_CACHE, offline), empty until a test lays a
    model in it: never the user's own cache."""
    return tmp_path_factory.mktemp("hf") / "hub"


@pytest.fixture(scope="module")
def cluster(hub_cache):
    """A `ray start --head` cluster in its own process group (killed whole at teardown), and this process
    connected to it as a driver."""
    temp = tempfile.mkdtemp(prefix="cr", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    port = free_port()
    ports = [f"--{name}={free_port()}" for name in ("node-manager-port", "object-manager-port",
                                                   "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                   "metrics-export-port", "runtime-env-agent-port")]
    ray_bin = str(Path(sys.executable).with_name("ray"))
    log = open(Path(temp) / "head.log", "wb")  # noqa: SIM115 (closed at teardown)
    head = subprocess.Popen([ray_bin, "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             f"--object-store-memory={100 * 1024**2}", "--include-dashboard=false",
                             f"--temp-dir={temp}", "--disable-usage-stats", *ports],
                            env={**ENV, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"},
                            start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    try:
        deadline = time.monotonic() + 180
        while b"Ray runtime started" not in (Path(temp) / "head.log").read_bytes():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start failed: {(Path(temp) / 'head.log').read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        yield address
    finally:
        ray.shutdown()
        os.environ.pop("RAY_AUTH_MODE", None)
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(head.pid, sig)
                head.wait(wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        log.close()
        subprocess.run(["rm", "-rf", temp], check=False)


def texts(n: int, seed: int) -> list[str | None]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) if i % 97 else (None if i % 2 else "  ")
            for i in range(n)]


def write_corpus(folder: Path, n: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "reviews.parquet"
    pq.write_table(pa.table({"id": list(range(n)), "text": texts(n, seed)}), path)
    return path


def write_poison(path: Path, mixed: bool = True) -> None:
    """JSONL with every kind of bad row the readers know, and a huge text (truncated, not an error).
    `mixed`: a number where a text should be (JSONL keeps it; a Parquet output refuses mixed types)."""
    lines = [json.dumps({"id": i, "text": t}) for i, t in enumerate(texts(40, 7))]
    lines[3] = '{"id": 3, "text": "un \\ud800 seul"}'  # a lone surrogate, as JSON may escape it
    lines[5] = json.dumps({"id": 5, "text": "énorme " * 200_000})
    lines[8] = '{"id": 8, "text": "not closed'
    lines[11] = json.dumps({"id": 11, "text": 42 if mixed else None})
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def single(source: Path, output: Path, batch_rows: int) -> Path:
    """The single-machine job (`classify -i`), one thread like each actor."""
    from coulisse.interfaces.jobs.runner import JobOptions, classify_file
    from coulisse.pipelines import pipeline

    job = JobOptions(input=str(source), output=str(output), batch_rows=batch_rows, model=MODEL, quiet=True)
    classify_file(job, lambda: pipeline("text-classification", model=MODEL, threads=1))
    return output


def shards(out: Path, prefix: str = "", ext: str = "parquet") -> list[str]:
    return sorted(glob.glob(str(out / f"{prefix}*-[0-9][0-9][0-9][0-9][0-9][0-9].{ext}")))


def assert_same(files: list[str], reference: Path) -> None:
    """The shards, in name order, hold the reference's rows in order: same columns and types, same values,
    scores within SCORE_TOLERANCE."""
    got = pa.concat_tables([pq.read_table(f) for f in files])
    want = pq.read_table(reference)
    assert got.schema == want.schema
    assert got.num_rows == want.num_rows
    assert got.drop(["score"]).equals(want.drop(["score"]))
    for a, b in zip(got.column("score").to_pylist(), want.column("score").to_pylist(), strict=True):
        assert (a is None) == (b is None)
        assert a is None or abs(a - b) <= SCORE_TOLERANCE
    ids = got.column("id").to_pylist()
    assert len(ids) == len(set(ids))  # no row twice


def options(source: str, out: Path, **kw) -> RayOptions:
    return RayOptions(input=source, output=str(out), model=MODEL, actors=2, threads=1, quiet=True, **kw)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """1,500 rows in shards of 100, and the single-machine output: the fault tests' input."""
    folder = tmp_path_factory.mktemp("small")
    source = write_corpus(folder / "in", 1500, seed=1)
    return source, single(source, folder / "reference.parquet", 100)


@pytest.mark.slow
def test_equals_the_single_machine_job(cluster, tmp_path):
    source = write_corpus(tmp_path / "data", 5000, seed=0)
    write_poison(tmp_path / "data" / "poison.jsonl", mixed=False)
    seen = {}
    summary = distributed.run(options(str(tmp_path / "data" / "*"), tmp_path / "out", batch_rows=500),
                              on_shard=lambda name, pool: seen.setdefault("pids", pool.pids))
    assert (summary.actors, summary.threads, len(set(seen["pids"]))) == (2, 1, 2)
    assert summary.shards == 1 + 10 and summary.rows == 5040 and summary.skipped == 0
    # inputs sort as poison.jsonl, reviews.parquet: file 0 then file 1
    assert_same(shards(tmp_path / "out", "00001-reviews"), single(source, tmp_path / "ref.parquet", 500))
    poison = single(tmp_path / "data" / "poison.jsonl", tmp_path / "poison.parquet", 500)
    assert_same(shards(tmp_path / "out", "00000-poison"), poison)
    errors = dict(zip(*pq.read_table(poison, columns=["id", "error"]).to_pydict().values(), strict=True))
    assert "surrogate" in errors[3] and "invalid JSON" in errors[None] and "null" in errors[11]
    assert errors[5] is None  # the huge text is classified (truncated), like any long one


@pytest.mark.slow
def test_jsonl_shards_hold_the_single_machine_records(cluster, tmp_path):
    source = tmp_path / "poison.jsonl"
    write_poison(source)
    summary = distributed.run(options(str(source), tmp_path / "out", batch_rows=16, shard_format="jsonl"))
    assert summary.shards == 3 and summary.errored == 4
    got = [json.loads(line) for f in shards(tmp_path / "out", ext="jsonl")
           for line in Path(f).read_text(encoding="utf-8").splitlines()]
    reference = single(source, tmp_path / "ref.jsonl", 16)
    want = [json.loads(line) for line in reference.read_text(encoding="utf-8").splitlines()]
    assert [list(r) for r in got] == [list(r) for r in want]  # same keys, same order
    for a, b in zip(got, want, strict=True):
        assert {k: v for k, v in a.items() if k != "score"} == {k: v for k, v in b.items() if k != "score"}
        assert (a["score"] is None) == (b["score"] is None)
        assert a["score"] is None or abs(a["score"] - b["score"]) <= SCORE_TOLERANCE


@pytest.mark.slow
def test_a_killed_actor_is_restarted_and_its_shards_retried(cluster, small, tmp_path):
    source, reference = small
    killed = []

    def kill_one(name, pool):
        if len(killed) == 0 and name.endswith("000001.parquet"):
            os.kill(pool.pids[0], signal.SIGKILL)
            killed.append(pool.pids[0])

    summary = distributed.run(options(str(source), tmp_path / "out", batch_rows=100), on_shard=kill_one)
    assert killed and summary.shards == 15
    assert_same(shards(tmp_path / "out"), reference)


@pytest.mark.slow
def test_past_its_restarts_the_job_stops_and_a_rerun_completes(cluster, small, tmp_path):
    source, reference = small
    out = tmp_path / "out"

    commits = []

    def kill_one(name, pool):  # after the second commit, whichever shards the two actors finished first (shard 1
        commits.append(name)  # could commit before shard 0 under load: one shard committed, red in a CI pre-check)
        if len(commits) == 2:
            os.kill(pool.pids[0], signal.SIGKILL)

    with pytest.raises(ClusterError, match="rerun the same command"):
        distributed.run(options(str(source), out, batch_rows=100, max_restarts=0), on_shard=kill_one)
    committed = len(shards(out))
    assert 2 <= committed < 15
    summary = distributed.run(options(str(source), out, batch_rows=100))
    assert (summary.skipped, summary.shards) == (committed, 15 - committed)
    assert_same(shards(out), reference)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_driver_reruns_to_the_uninterrupted_output(cluster, small, tmp_path, stop):
    """SIGKILL: a crash. SIGTERM: stopped like Ctrl-C, as the single-machine job is (ray.init's own handler,
    exit status 15 and a C++ stack, is replaced): status 143 and the line that says how to go on."""
    source, reference = small
    out = tmp_path / "out"
    command = [sys.executable, "-c", MAIN, "classify", "-i", str(source), "-o", str(out), "--ray", "--address",
               cluster, "--actors", "2", "--threads", "1", "-b", "100", "-m", MODEL]
    driver = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while len(shards(out)) < 3 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(stop)
    driver.wait(60)
    stderr = driver.stderr.read().decode()
    committed = len(shards(out))
    assert 3 <= committed < 15, stderr
    if stop == signal.SIGTERM:
        assert driver.returncode == 143, stderr
        said = re.fullmatch(rf"interrupted; (\d+) shards committed in {re.escape(str(out))} stay: rerun "
                            "the same command to go on.", stderr.strip().splitlines()[-1])
        assert said and "SIGTERM" not in stderr, stderr
        assert 3 <= int(said[1]) <= committed  # counted when stopped; a worker may commit one more after
    rerun = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{committed} shards already committed, skipped" in rerun.stderr
    assert_same(shards(out), reference)
    assert not [p for p in os.listdir(out) if p.startswith(distributed.TMP)]


@pytest.mark.slow
def test_fast_runs_the_drivers_fast_mode_on_every_actor(cluster, small, tmp_path):
    """`classify --ray --fast`: the actors run the precision --fast picks on the driver's machine, so the shards
    are the single-machine `--fast` output (it used to be dropped: the actors ran exact fp32), and
    `_coulisse-job.json` records it."""
    import coulisse
    from coulisse.engine.cpu import this_machine
    from coulisse.interfaces.jobs.runner import JobOptions, classify_file

    mode = this_machine().fast
    if mode == "float32":
        pytest.skip("--fast is exact fp32 on this CPU: nothing to tell apart")
    source, exact = small
    reference = tmp_path / "fast.parquet"
    fast = coulisse.pipeline("text-classification", model=MODEL, threads=1, fast=True)
    classify_file(JobOptions(input=str(source), output=str(reference), batch_rows=100, model=MODEL, quiet=True,
                             fast=True), lambda: fast)
    moved = [abs(a - b) for a, b in zip(*(pq.read_table(p).column("score").to_pylist() for p in (exact, reference)),
                                        strict=True) if a is not None]
    assert max(moved) > 100 * SCORE_TOLERANCE  # the fast mode moves the scores: the comparison below can tell
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", MAIN, "classify", "-i", str(source), "-o", str(out), "--ray",
                           "--address", cluster, "--actors", "2", "--threads", "1", "-b", "100", "-m", MODEL, "--fast"],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert_same(shards(out), reference)
    manifest = json.loads((out / distributed.MANIFEST).read_text())
    ran = "int8" if fast.preparation.quantize else str(fast.dtype).removeprefix("torch.")
    assert (manifest["key"]["fast"], manifest["key"]["fast_mode"], manifest["precision"]) == (True, mode, ran)
    assert done.stderr.strip().endswith(f"; {ran} weights) -> {out}"), done.stderr


@pytest.mark.slow
def test_python_entry_point_labels_a_dataset(cluster, tmp_path):
    import pandas as pd

    import coulisse.ray

    rows = texts(300, seed=3)
    rows[10] = "énorme " * 100_000
    df = pd.DataFrame({"id": range(300), "text": rows})
    # Six blocks already in the object store: both actors get work, and no read task needs a CPU the
    # actors hold (a Dataset read from files needs one free, docs/scale-out.md).
    blocks = [df.iloc[i * 50:(i + 1) * 50] for i in range(6)]
    done = coulisse.ray.classify(ray.data.from_pandas(blocks), model=MODEL, concurrency=2, batch_size=64,
                                 threads=1, key="id").materialize()
    # the added columns' Arrow types are the single-machine Parquet output's (pandas batches included)
    schema = done.schema()
    assert dict(zip(schema.names[-3:], map(str, schema.types[-3:]), strict=True)) == {
        "label": "string", "score": "double", "error": "string"}
    labelled = done.to_pandas().sort_values("id").reset_index(drop=True)
    assert list(labelled.columns) == ["id", "text", "label", "score", "error"]
    # The oracle: the single-machine job on the same rows, read from JSONL.
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(rows)), encoding="utf-8")
    want = pq.read_table(single(source, tmp_path / "ref.parquet", 64)).to_pandas()
    assert labelled["label"].isna().tolist() == want["label"].isna().tolist()
    assert labelled["label"].dropna().tolist() == want["label"].dropna().tolist()
    assert (labelled["score"].fillna(-1) - want["score"].fillna(-1)).abs().max() <= SCORE_TOLERANCE
    for got, expected, i in zip(labelled["error"], want["error"], range(300), strict=True):
        if pd.isna(expected):
            assert pd.isna(got)
        else:  # the single job names the line, the Dataset the key
            assert got == f"id {i}: " + expected.split(": ", 1)[1]


@pytest.mark.parametrize("call, kwargs, message", [
    ("classify", {"num_cpus": 2}, r"num_cpus=2 leaves none of the cluster's 2 CPUs .* at most 1"),
    ("classify", {"num_cpus": 0}, r"num_cpus=0; pass a positive number"),
    ("classify", {"num_cpus": "1"}, r"num_cpus='1'; pass a positive number"),
    ("classify", {"concurrency": 0}, r"concurrency=0; pass a positive number of actors, or \(min, max\)"),
    ("classify", {"column": "review"}, r"no column 'review'; its columns are id, text. Pass column=NAME"),
    ("classify", {"key": "idd"}, r"no column 'idd'; its columns are id, text. Pass key=NAME"),
    ("classify", {"long_text": "bogus"}, r"long_text='bogus'; use one of truncate, chunk"),
    ("classify", {"stride": 8}, r"stride only applies with long_text='chunk'"),
    ("classify", {"quantize": "fp16"}, r"quantize='fp16'; use 'none' or 'int8'"),
    ("classify", {"all_score": True}, r"Predictor: .*'all_score'; its options are column, all_scores"),
    ("embed", {"pooling": "max"}, r"pooling='max'; use one of"),
    ("embed", {"model": None}, r"embed\(\) needs model="),
])
def test_the_python_entry_point_refuses_on_the_driver(cluster, tmp_path, call, kwargs, message):
    """What an actor would refuse after starting (a Ray traceback of 20 lines, seconds later) or what would
    leave Ray Data waiting forever for a CPU is one InputError from the call itself, before any actor starts."""
    import coulisse.ray

    ds = ray.data.read_parquet(str(write_corpus(tmp_path, 20, seed=4)))
    kwargs = {"model": MODEL, **kwargs}
    with pytest.raises(InputError, match=message) as info:
        getattr(coulisse.ray, call)(ds, **kwargs)
    assert "\n" not in str(info.value)


def test_actors_that_cannot_fit_a_local_ray_are_refused(cluster, tmp_path):
    """On the Ray a job starts for itself (no autoscaler), actors past its CPUs would never start: refused with
    what fits. On a cluster given by --address, only a warning (an autoscaler may add nodes)."""
    from coulisse.interfaces.jobs.cluster import Pool

    wide = options(str(write_corpus(tmp_path, 10, seed=5)), tmp_path / "out")
    for actors, threads, fits in ((8, 2, "--actors 1"), (1, 4, "--threads 2")):
        wide.actors, wide.threads = actors, threads
        with pytest.raises(InputError, match=f"need {actors * threads} CPUs and this machine has 2: .* Pass {fits}"):
            Pool(wide, local=True)


@pytest.mark.slow
def test_the_python_snippets_of_the_docs_run_on_a_two_cpu_cluster(cluster, tmp_path):
    """docs/scale-out.md's Python blocks, run as written on this 2-CPU cluster (their buckets and Hub ids made
    local): each finishes (an earlier page's 4 actors x 2 CPUs waited forever) and labels or embeds every row."""
    import re

    doc = (Path(__file__).parents[2] / "docs" / "scale-out.md").read_text(encoding="utf-8")
    section = doc.split("## The Python entry point", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 3
    folder = write_corpus(tmp_path / "reviews", 50, seed=8).parent
    (tmp_path / "labelled").mkdir()
    local = {"s3://bucket/reviews/": str(folder), "s3://bucket/labelled/": str(tmp_path / "labelled"),
             "s3://bucket/vectors/": str(tmp_path / "vectors"), "tblard/tf-allocine": MODEL,
             "sentence-transformers/all-MiniLM-L6-v2": str(Path(__file__).parents[1] / "fixtures" / "tf_camembert"),
             "ray.init()": "pass"}
    scope: dict = {}
    for block in blocks:
        for online, here in local.items():
            block = block.replace(online, here)
        exec(block, scope)  # noqa: S102 (the documentation's own code)
    assert len(scope["labelled"].take_all()) == 50
    written = pq.read_table(str(tmp_path / "labelled"))
    assert written.num_rows == 50 and {"label", "score", "error"} <= set(written.column_names)
    assert pq.read_table(str(tmp_path / "vectors")).num_rows == 50


@pytest.mark.slow
def test_a_model_that_fails_to_load_stops_the_job_in_one_line(cluster, small, tmp_path):
    source, _ = small
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    result = CliRunner().invoke(cli, ["classify", "-i", str(source), "-o", str(tmp_path / "out"), "--ray",
                                      "--actors", "2", "-m", str(broken)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert result.output.startswith(f"Error: ClusterError: the model {broken} failed to load on node ")
    assert "config.json" in result.output
    # The record it leaves holds no shard: the corrected command goes on without --overwrite.
    fixed = CliRunner().invoke(cli, ["classify", "-i", str(source), "-o", str(tmp_path / "out"), "--ray",
                                     "--actors", "2", "-m", MODEL, "--quiet"])
    assert fixed.exit_code == 0, fixed.output


@pytest.mark.slow
def test_an_actor_restarted_where_the_model_is_gone_stops_in_one_line(cluster, small, tmp_path):
    """Ray restarts a killed actor, which loads the model again: where it is gone (a node that lost its mount),
    the job stops with the load error; it failed with an AttributeError traceback from the actor (audit 42)."""
    source, reference = small
    model, away = tmp_path / "model", tmp_path / "model.away"
    shutil.copytree(MODEL, model)
    out = tmp_path / "out"

    def lose_the_model(name, pool):
        if name.endswith("000001.parquet"):
            model.rename(away)
            os.kill(pool.pids[0], signal.SIGKILL)

    job = RayOptions(input=str(source), output=str(out), model=str(model), actors=2, threads=1, quiet=True,
                     batch_rows=100)
    with pytest.raises(ClusterError, match=f"the model {model} failed to load on node .* when Ray restarted an "
                                           "actor there: .*rerun the same command"):
        distributed.run(job, on_shard=lose_the_model)
    away.rename(model)
    summary = distributed.run(job)
    assert summary.skipped >= 2 and summary.skipped + summary.shards == 15
    assert_same(shards(out), reference)


@pytest.mark.slow
def test_a_relative_model_folder_is_the_drivers(cluster, small, tmp_path, monkeypatch):
    """The actors of a `ray start` cluster run in Ray's working folder, not the driver's: `-m model` named
    nothing there. The manifest records the absolute path, so a rerun that names it so is the same job."""
    source, reference = small
    shutil.copytree(MODEL, tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    job = RayOptions(input=str(source), output="out", model="model", actors=2, threads=1, quiet=True,
                     batch_rows=100)
    distributed.run(job)
    assert_same(shards(tmp_path / "out"), reference)
    again = distributed.run(RayOptions(input=str(source), output="out", model=str(tmp_path / "model"), actors=2,
                                       threads=1, quiet=True, batch_rows=100))
    assert again.skipped == 15


@pytest.mark.slow
def test_a_full_disk_is_said_with_the_shard_and_the_way_on(cluster, small, tmp_path, monkeypatch):
    source, reference = small
    real, written = distributed.commit_shard, []

    def full_at_the_third(out, shard, preds, fmt):
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        real(out, shard, preds, fmt)
        written.append(shard.name)

    monkeypatch.setattr(distributed, "commit_shard", full_at_the_third)
    from coulisse.interfaces.jobs.lock import OutputError

    with pytest.raises(OutputError, match=r"cannot write the shard 00000-reviews-00000\d.parquet in .*No space "
                                          "left on device; the shards committed before it stay: fix the cause "
                                          "and rerun the same command"):
        distributed.run(options(str(source), tmp_path / "out", batch_rows=100))
    monkeypatch.setattr(distributed, "commit_shard", real)
    assert distributed.run(options(str(source), tmp_path / "out", batch_rows=100)).skipped == 2
    assert_same(shards(tmp_path / "out"), reference)


def test_a_column_that_is_not_there_is_said_before_ray_starts(monkeypatch, tmp_path):
    """It was said after the actors had loaded the model (17 s), and its manifest refused the corrected rerun."""
    from coulisse.interfaces.jobs import cluster

    monkeypatch.setattr(cluster, "connect", lambda address: pytest.fail("Ray was started"))
    source = write_corpus(tmp_path / "in", 10, seed=0)
    with pytest.raises(InputError, match="no column 'txet'"):
        distributed.run(options(str(source), tmp_path / "out", column="txet"))
    assert not (tmp_path / "out").exists()


def test_a_second_job_on_the_folder_is_refused_naming_the_folder(tmp_path):
    """The lock is a file in the folder: the refusal names the folder, and the way on of a --ray job (a rerun;
    --resume changes nothing there)."""
    from coulisse.interfaces.jobs.lock import OutputLock, OutputLockedError

    source, out = write_corpus(tmp_path / "in", 10, seed=0), tmp_path / "out"
    out.mkdir()
    with OutputLock(str(out / "_coulisse")), pytest.raises(OutputLockedError) as refused:
        distributed.run(options(str(source), out))
    assert str(refused.value).startswith(f"{out}/ is being written by another coulisse job")
    assert str(refused.value).endswith("stop it and rerun the same command.")


def test_an_address_where_nothing_listens_is_said_at_once(tmp_path):
    """`ray.init` retries a HOST:PORT that answers nothing for about 14 minutes, deaf to Ctrl-C."""
    source = write_corpus(tmp_path / "in", 10, seed=0)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", MAIN, "classify", "-i", str(source), "-o", str(tmp_path / "out"),
                             "--ray", "-m", MODEL, "--address", f"127.0.0.1:{free_port()}"], env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Error: ClusterError: cannot connect to the Ray cluster at 127.0.0.1:" in result.stderr
    assert time.monotonic() - started < 60


def test_without_ray_the_option_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = CliRunner().invoke(cli, ["classify", "-i", "x.parquet", "-o", str(tmp_path), "--ray"])
    assert result.exit_code == 1
    assert result.output == 'Error: --ray needs Ray, which is not installed: pip install "coulisse[ray]"\n'


def test_a_folder_of_another_job_is_refused_before_ray_starts(tmp_path):
    source = write_corpus(tmp_path / "in", 10, seed=0)
    out = tmp_path / "out"
    out.mkdir()
    key = distributed.job_key(options(str(source), out), [str(source)])
    distributed.open_output(out, key, overwrite=False)
    other = distributed.job_key(options(str(source), out, batch_rows=7), [str(source)])
    # A job that stopped before its first shard (a model that failed to load) leaves nothing to protect: the
    # corrected command starts over without --overwrite.
    assert distributed.open_output(out, other, overwrite=False)["key"] == other
    distributed.open_output(out, key, overwrite=True)
    (out / "00000-reviews-000000.parquet").write_bytes(b"a committed shard")
    with pytest.raises(InputError, match="another batch_rows .1024, now 7.; rerun with that job's options"):
        distributed.open_output(out, other, overwrite=False)
    (out / "00000-reviews-000000.parquet").unlink()
    (out / "notes.txt").write_text("mine")
    (out / distributed.MANIFEST).unlink()
    with pytest.raises(InputError, match="is not empty and holds no _coulisse-job.json"):
        distributed.open_output(out, key, overwrite=False)
    with pytest.raises(InputError, match="no file matches"):
        distributed.input_files(str(tmp_path / "nothing" / "*.parquet"))


def test_other_inputs_are_named_file_by_file(tmp_path):
    """A glob that matches one more file, or an input touched since: the refusal names the files (not the
    manifest's dicts), and does not advise rerunning the command just run."""
    a, b = write_corpus(tmp_path / "a", 10, seed=0), write_corpus(tmp_path / "b", 10, seed=1)
    out = tmp_path / "out"
    out.mkdir()
    distributed.open_output(out, distributed.job_key(options(str(a), out), [str(a)]), overwrite=False)
    (out / "00000-reviews-000000.parquet").write_bytes(b"a committed shard")  # else the folder gives way
    both = distributed.job_key(options(str(a), out), [str(a), str(b)])
    with pytest.raises(InputError, match=r"other inputs \(reviews.parquet is new\): they cannot be reused; pass "
                                         r"--overwrite to start over, or write to a new folder\.$"):
        distributed.open_output(out, both, overwrite=False)
    os.utime(a, ns=(1, 1))
    with pytest.raises(InputError, match=r"other inputs \(reviews.parquet changed \(size or time\)\)"):
        distributed.open_output(out, distributed.job_key(options(str(a), out), [str(a)]), overwrite=False)
    assert distributed.changed_inputs([{"path": f"/x/{i}", "bytes": 1} for i in range(5)], []) == (
        "0 is gone, 1 is gone, 2 is gone and 2 more")


# --- embed --ray: the same driver and actors, with the embedding job's row model ---------------------------------

# Same chunks, same code, one thread on both sides, vectors divided by their norm (--normalize: |v_i| <= 1):
# any difference is the order of float32 sums, a few ulps of a value below 1 (ulp 6e-8 there).
EMBED_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def encoder(factory):
    return str(factory.checkpoint("bert", base=True))


def embed_cli(*args: str):
    result = CliRunner(env={k: None for k in os.environ if k.startswith("COULISSE_")}).invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def assert_same_vectors(files: list[str], reference: Path) -> None:
    """The shards, in name order, hold the single-machine embed output's rows: same schema, same carried
    columns and errors, embeddings within EMBED_TOLERANCE."""
    import numpy as np

    got = pa.concat_tables([pq.read_table(f) for f in files])
    want = pq.read_table(reference)
    assert got.schema == want.schema
    assert got.drop(["embedding"]).equals(want.drop(["embedding"]))  # ids, texts, errors identical
    a, b = got.column("embedding").to_pylist(), want.column("embedding").to_pylist()
    assert [v is None for v in a] == [v is None for v in b]
    vectors = [(x, y) for x, y in zip(a, b, strict=True) if x is not None]
    assert vectors
    diff = np.abs(np.array([x for x, _ in vectors], np.float32) - np.array([y for _, y in vectors], np.float32))
    assert diff.max() <= EMBED_TOLERANCE


@pytest.mark.slow
def test_embed_equals_the_single_machine_job_and_a_rerun_skips_committed_shards(cluster, encoder, tmp_path):
    source = write_corpus(tmp_path / "data", 600, seed=4)
    write_poison(tmp_path / "data" / "poison.jsonl", mixed=False)
    out = tmp_path / "out"
    command = ["embed", "-i", str(tmp_path / "data" / "*"), "-o", str(out), "--ray", "--address", cluster,
               "--actors", "2", "--threads", "1", "-b", "100", "-m", encoder, "--normalize"]
    result = embed_cli(*command)
    assert "640 rows in 7 shards (" in result.output and "errored) on 2 actors x 1 thread" in result.output
    references = {}
    for name, path in (("00000-poison", tmp_path / "data" / "poison.jsonl"), ("00001-reviews", source)):
        references[name] = tmp_path / f"{name}.parquet"
        embed_cli("embed", "-i", str(path), "-o", str(references[name]), "--threads", "1", "-b", "100",
                  "-m", encoder, "--normalize", "--quiet")
        assert_same_vectors(shards(out, name), references[name])
    errors = dict(zip(*pq.read_table(references["00000-poison"], columns=["id", "error"]).to_pydict().values(),
                      strict=True))
    assert "surrogate" in errors[3] and "invalid JSON" in errors[None] and "null" in errors[11]
    assert errors[5] is None  # the huge text is embedded (truncated)

    # The record holds the options that change the vectors, as the single-machine record does.
    from coulisse.interfaces.jobs.embed import Embedder
    from coulisse.pipelines import pipeline

    manifest = json.loads((out / distributed.MANIFEST).read_text())
    assert {k: manifest["key"][k] for k in ("task", "pooling", "normalize")} == \
        {"task": "embed", "pooling": "auto", "normalize": True}
    fingerprint = Embedder(pipeline("feature-extraction", model=encoder), "auto", True).fingerprint()
    assert manifest["engine"] == json.loads(json.dumps(fingerprint)) and manifest["complete"]

    # A rerun skips every committed shard; one removed is written again, equal to the first.
    first = Path(shards(out, "00001-reviews")[2])
    before = pq.read_table(first)
    first.unlink()
    rerun = embed_cli(*command)
    assert "100 rows in 1 shard (" in rerun.output and "6 shards already committed, skipped" in rerun.output
    assert pq.read_table(first).equals(before)
    assert_same_vectors(shards(out, "00001-reviews"), references["00001-reviews"])
    # Other options are another job: refused, not mixed into these shards.
    other = CliRunner().invoke(cli, [*command[:-1], "--no-normalize"])
    assert other.exit_code == 1 and "another normalize (True, now False)" in other.output


@pytest.mark.slow
@pytest.mark.parametrize("batch_format", ["pyarrow", "pandas"])
def test_python_entry_point_embeds_a_dataset(cluster, encoder, tmp_path, batch_format):
    """`coulisse.ray.embed` on a Dataset read from Parquet, written back with `write_parquet`: the rows of
    `coulisse embed -i` on the same file (same schema for the added columns, vectors within EMBED_TOLERANCE),
    whichever batch format the actors get (pandas once failed Ray's conversion of a column with nulls)."""
    import coulisse.ray

    source = write_corpus(tmp_path / "data", 200, seed=5)
    reference = tmp_path / "ref.parquet"
    embed_cli("embed", "-i", str(source), "-o", str(reference), "--threads", "1", "-b", "64", "-m", encoder,
              "--normalize", "--quiet")
    # concurrency 1 on the 2-CPU cluster: the read task keeps a CPU (docs/scale-out.md).
    vectors = coulisse.ray.embed(ray.data.read_parquet(str(source)), model=encoder, concurrency=1,
                                 batch_size=64, threads=1, normalize=True, key="id", batch_format=batch_format)
    out = tmp_path / "out"
    vectors.write_parquet(str(out))
    got = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob(str(out / "*.parquet")))]).sort_by("id")
    want = pq.read_table(reference)
    assert got.column_names == want.column_names == ["id", "text", "embedding", "error"]
    assert got.schema.field("embedding").type == want.schema.field("embedding").type
    assert got.column("id").to_pylist() == list(range(200))
    errors = got.column("error").to_pylist()
    assert [e is None for e in errors] == [e is None for e in want.column("error").to_pylist()]
    assert errors[0] == "id 0: 'text' is only whitespace" and errors[97] == "id 97: 'text' is null"
    import numpy as np

    a, b = got.column("embedding").to_pylist(), want.column("embedding").to_pylist()
    assert [v is None for v in a] == [v is None for v in b]
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None]
    assert len(pairs) == 197  # rows 0, 97 and 194 are blank or null
    diff = np.abs(np.array([x for x, _ in pairs], np.float32) - np.array([y for _, y in pairs], np.float32))
    assert diff.max() <= EMBED_TOLERANCE


class InProcessPool:
    """The actors' work (cluster.ShardWorker's row model) done in this process: a job that needs no Ray."""

    def __init__(self, options: RayOptions, local: bool = False):
        from coulisse.interfaces.jobs.row_models import describe_model, row_model
        from coulisse.interfaces.jobs.state import digest, model_fingerprint

        pipe, self.predictor = row_model(options, 1)
        self.info, self.size, self.threads = describe_model(self.predictor), 1, 1
        self.digest = digest(model_fingerprint(pipe.checkpoint.directory))
        self.done: list = []

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def full(self) -> bool:
        return False

    def busy(self) -> bool:
        return bool(self.done)

    def submit(self, shard) -> None:
        preds = self.predictor(shard.rows)
        truncated, self.predictor.truncated = self.predictor.truncated, 0
        self.done.append((shard, preds, truncated))

    def next_done(self):
        return self.done.pop(0)


def forbid_ray(monkeypatch) -> None:
    """From here on, connecting to or starting Ray fails the test: a rerun must not need the cluster."""
    from coulisse.interfaces.jobs import cluster as cluster_module

    def started(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(cluster_module, "connect", started)
    monkeypatch.setattr(cluster_module, "Pool", started)
    monkeypatch.setattr(ray, "init", started)


def test_a_rerun_of_a_finished_job_does_not_start_ray(monkeypatch, tmp_path):
    """Every shard committed: the rerun says so and exits 0 without connecting to Ray (~16 s for a local one)
    or loading the model; with a model file changed, or one shard gone, it goes to the cluster again (which
    checks the model's files, or computes the shard)."""
    from contextlib import nullcontext

    from coulisse.interfaces.jobs import cluster as cluster_module

    source = write_corpus(tmp_path / "in", 250, seed=3)
    out, model = tmp_path / "out", tmp_path / "model"
    shutil.copytree(MODEL, model)
    command = ["classify", "-i", str(source), "-o", str(out), "--ray", "-b", "100", "-m", str(model)]
    monkeypatch.setattr(cluster_module, "connect", lambda address: nullcontext(False))
    monkeypatch.setattr(cluster_module, "Pool", InProcessPool)
    first = CliRunner().invoke(cli, command)
    assert first.exit_code == 0, first.output
    assert "250 rows in 3 shards" in first.output and len(shards(out)) == 3

    forbid_ray(monkeypatch)
    rerun = CliRunner().invoke(cli, command)
    assert rerun.exit_code == 0, rerun.output
    assert rerun.output == f"nothing left to do: 3 shards already committed, skipped -> {out}\n"
    config = (model / "config.json").read_bytes()
    (model / "config.json").write_bytes(config + b"\n")  # other model files: no skipping on the driver's word
    changed = CliRunner().invoke(cli, command)
    assert changed.exit_code == 1 and isinstance(changed.exception, AssertionError)
    (model / "config.json").write_bytes(config)
    assert CliRunner().invoke(cli, command).exit_code == 0
    Path(shards(out)[1]).unlink()
    again = CliRunner().invoke(cli, command)
    assert again.exit_code == 1 and isinstance(again.exception, AssertionError)


def test_a_rerun_on_a_hub_id_from_the_local_cache_does_not_start_ray(cluster, hub_cache, monkeypatch, tmp_path,
                                                                    tf_camembert_dir):
    """A Hub id that this machine's Hugging Face cache holds (offline) is what a load here reads, cache first:
    a finished job's rerun hashes its snapshot as it hashes a folder, and skips Ray when the files are those the
    actors loaded. A cached file changed, the rerun goes to the cluster again."""
    from factory import make_hf_cache


    repo = "tblard/tf-allocine"
    snapshot = make_hf_cache(hub_cache, tf_camembert_dir, repo)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))  # the driver's cache: the one the actors read
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HOME", raising=False)
    source = write_corpus(tmp_path / "in", 250, seed=5)
    out = tmp_path / "out"
    command = ["classify", "-i", str(source), "-o", str(out), "--ray", "--address", cluster, "--actors", "1",
               "--threads", "1", "-b", "100", "-m", repo]
    first = CliRunner().invoke(cli, command)
    assert first.exit_code == 0, first.output
    assert "250 rows in 3 shards" in first.output and len(shards(out)) == 3
    reference = single(source, tmp_path / "reference.parquet", 100)  # the fixture's own folder: the same files
    assert_same(shards(out), reference)

    forbid_ray(monkeypatch)
    rerun = CliRunner().invoke(cli, command)
    assert rerun.exit_code == 0, rerun.output
    assert rerun.output == f"nothing left to do: 3 shards already committed, skipped -> {out}\n"
    config = snapshot / "config.json"
    blob = config.resolve()
    data = blob.read_bytes()
    blob.write_bytes(data + b"\n")  # other files in the cache: no skipping on the driver's word
    changed = CliRunner().invoke(cli, command)
    assert changed.exit_code == 1 and isinstance(changed.exception, AssertionError)
    blob.write_bytes(data)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))  # not cached here: the actors resolve it
    uncached = CliRunner().invoke(cli, command)
    assert uncached.exit_code == 1 and isinstance(uncached.exception, AssertionError)


def test_embed_ray_refuses_a_npy_output_in_one_line(tmp_path):
    source = write_corpus(tmp_path / "in", 10, seed=0)
    result = CliRunner().invoke(cli, ["embed", "-i", str(source), "-o", str(tmp_path / "v.npy"), "--ray",
                                      "-m", "unused"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "--ray writes a folder of Parquet or JSONL shards (--shard-format), not one .npy file" in result.output
    assert not (tmp_path / "v.npy").exists()


def test_encoding_decodes_on_the_driver_and_a_file_that_is_not_utf8_is_refused_before_ray(monkeypatch, tmp_path):
    """--encoding reaches the driver's readers (actors only see texts): a cp1252 CSV gives its UTF-8 twin's
    shards. Without it the file is refused in one line before Ray starts, nothing written; the manifest records
    the encoding, so a rerun with another is refused."""
    from contextlib import nullcontext

    from coulisse.interfaces.jobs import cluster as cluster_module

    said = ["Très bon film, un vrai chef-d’œuvre.", "12 € la place ? Non merci.", "Quel ennui… j’ai dormi."]
    text = "id,text\n" + "".join(f'{i},"{said[i % 3]}"\n' for i in range(150))
    for encoding in ("utf-8", "cp1252"):
        (tmp_path / encoding).mkdir()
        (tmp_path / encoding / "avis.csv").write_bytes(text.encode(encoding))
    command = ["classify", "--ray", "-b", "64", "-m", MODEL]
    forbid_ray(monkeypatch)
    refused = CliRunner().invoke(cli, [*command, "-i", str(tmp_path / "cp1252" / "avis.csv"), "-o",
                                       str(tmp_path / "out")])
    assert refused.exit_code == 1 and refused.output.count("\n") == 1, refused.output
    assert "avis.csv is not UTF-8: line 2 holds byte 0xe8" in refused.output and "--encoding cp1252" in refused.output
    assert not (tmp_path / "out").exists()

    monkeypatch.setattr(cluster_module, "connect", lambda address: nullcontext(False))
    monkeypatch.setattr(cluster_module, "Pool", InProcessPool)
    for encoding in ("utf-8", "cp1252"):
        result = CliRunner().invoke(cli, [*command, "-i", str(tmp_path / encoding / "avis.csv"), "-o",
                                          str(tmp_path / f"out-{encoding}"), "--encoding", encoding])
        assert result.exit_code == 0, result.output
    got, want = shards(tmp_path / "out-cp1252"), shards(tmp_path / "out-utf-8")
    assert len(got) == len(want) == 3
    for a, b in zip(got, want, strict=True):
        assert pq.read_table(a).equals(pq.read_table(b))
    assert pq.read_table(got[0]).column("text").to_pylist()[:3] == said
    other = CliRunner().invoke(cli, [*command, "-i", str(tmp_path / "cp1252" / "avis.csv"), "-o",
                                     str(tmp_path / "out-cp1252"), "--encoding", "latin-1"])
    assert other.exit_code == 1 and "another encoding ('cp1252', now 'iso8859-1')" in other.output, other.output


@pytest.mark.slow
def test_a_job_whose_every_row_failed_exits_1_in_one_line(cluster, tmp_path):
    """Every text empty or blank: every row is an error row on the actors, as in the single-machine job
    (tests/interfaces/test_jobs_failed.py), and the driver exits 1 with one line instead of its summary."""
    source = tmp_path / "blank.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": " " * i}) + "\n" for i in range(5)), encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["classify", "-i", str(source), "-o", str(out), "--ray", "--actors", "1",
                                      "--threads", "1", "-m", MODEL, "--shard-format", "jsonl"])
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    first = json.loads(Path(shards(out, ext="jsonl")[0]).read_text(encoding="utf-8").splitlines()[0])["error"]
    assert result.output == (f"Error: JobFailedError: every row failed (5 of 5 rows errored; the first: {first}); "
                             f"the reasons are in the error column of the shards in {out}.\n")
    assert first.startswith("line 1: ")


def sparse_dense(values: list, size: int):
    """SPLADE cells ({"indices", "values"} or None) as dense rows; None rows as NaN."""
    import numpy as np

    out = np.full((len(values), size), np.nan, dtype=np.float32)
    for i, v in enumerate(values):
        if v is not None:
            out[i] = 0
            out[i, v["indices"]] = v["values"]
    return out


@pytest.mark.slow
def test_splade_on_ray_equals_the_single_machine_job(cluster, task_factory, tmp_path):
    """A SparseEncoder folder (read as SPLADE on the actors, as on one machine): the --ray shards and
    `coulisse.ray.embed` in each batch format hold the single-machine job's `sparse_embedding` rows, compared
    dense within EMBED_TOLERANCE (a weight within ~1e-7 of zero may be in one and not the other)."""
    import numpy as np
    from task_factory import sparse_encoder_folder

    import coulisse.ray

    folder, _ = sparse_encoder_folder(task_factory, "bert", tmp_path)
    source = write_corpus(tmp_path / "data", 64, seed=6)
    reference = tmp_path / "ref.parquet"
    embed_cli("embed", "-i", str(source), "-o", str(reference), "--threads", "1", "-b", "32", "-m", str(folder),
              "--quiet")
    want = pq.read_table(reference)
    assert want.column_names == ["id", "text", "sparse_embedding", "error"]
    expected = sparse_dense(want.column("sparse_embedding").to_pylist(), 30522)

    out = tmp_path / "out"
    embed_cli("embed", "-i", str(source), "-o", str(out), "--ray", "--address", cluster, "--actors", "2",
              "--threads", "1", "-b", "32", "-m", str(folder))
    got = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob(str(out / "*.parquet")))])
    assert got.schema == want.schema and got.drop(["sparse_embedding"]).equals(want.drop(["sparse_embedding"]))
    dense = sparse_dense(got.column("sparse_embedding").to_pylist(), 30522)
    assert np.array_equal(np.isnan(dense), np.isnan(expected))
    assert np.nanmax(np.abs(dense - expected)) <= EMBED_TOLERANCE

    for batch_format in ("pyarrow", "pandas", "numpy"):
        weights = coulisse.ray.embed(ray.data.read_parquet(str(source)), model=str(folder), concurrency=1,
                                     batch_size=32, threads=1, key="id", batch_format=batch_format)
        rows = sorted(weights.take_all(), key=lambda r: r["id"])
        assert [r["id"] for r in rows] == list(range(64))
        dense = sparse_dense([None if r["sparse_embedding"] is None else
                              {k: list(v) for k, v in r["sparse_embedding"].items()} for r in rows], 30522)
        assert np.array_equal(np.isnan(dense), np.isnan(expected)), batch_format
        assert np.nanmax(np.abs(dense - expected)) <= EMBED_TOLERANCE, batch_format


# The audit's manifests: (what the file holds, the words of the refusal).
CRAFTED_MANIFESTS = [
    ("not json", "it cannot be read (Expecting value: line 1 column 1 (char 0))"),
    ("[1,2]", "it holds a JSON list, not an object"), ('"str"', "it holds a JSON str, not an object"),
    ('{"key": [1]}', "its key is not an object"),
    ('{"key": {"inputs": 5}, "model_files": null}', "its key's inputs are not a list of files"),
    ('{"key": {"inputs": [{"path": 1}]}}', "its key's inputs are not a list of files"),
    ('{"key": {}, "shards": ["a"], "complete": true}', "its shards are not a list of counts"),
    ('{"key": {}, "complete": "yes"}', "its complete is not true or false"),
]


@pytest.mark.parametrize(("held", "words"), CRAFTED_MANIFESTS, ids=[m for m, _ in CRAFTED_MANIFESTS])
def test_a_crafted_manifest_is_refused_in_one_line_before_ray_starts(monkeypatch, tmp_path, held, words):
    source = write_corpus(tmp_path / "in", 10, seed=0)
    out = tmp_path / "out"
    out.mkdir()
    (out / distributed.MANIFEST).write_text(held)
    forbid_ray(monkeypatch)
    result = CliRunner().invoke(cli, ["classify", "-i", str(source), "-o", str(out), "--ray", "-m", str(MODEL)])
    assert result.exit_code == 1 and not isinstance(result.exception, AssertionError), result.output
    assert result.output == (f"Error: InputError: {out / distributed.MANIFEST} is not a valid coulisse job manifest: "
                             f"{words}; pass --overwrite to start over, or write to a new folder.\n")


def test_overwrite_is_the_way_out_of_a_crafted_manifest(tmp_path):
    source = write_corpus(tmp_path / "in", 10, seed=0)
    out = tmp_path / "out"
    out.mkdir()
    (out / distributed.MANIFEST).write_text("not json")
    key = distributed.job_key(options(str(source), out), [str(source)])
    assert distributed.open_output(out, key, overwrite=True)["key"] == key
