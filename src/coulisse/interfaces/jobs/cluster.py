"""The Ray side of `classify|embed --ray`: connecting to a cluster, and a pool of actors that each hold one
pipeline and the job's row model (`distributed.row_model`: a `Predictor` or an `Embedder`).

Imported only when a `--ray` job runs (it imports ray). Rows travel to the actors as (text, error, where)
triples and the row model's results (`Prediction`, `Embedding`) come back; the actors never see the carried
columns, and the driver writes every shard (distributed.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING

import ray
from ray.exceptions import RayActorError, RayError

from coulisse.errors import CoulisseError, InputError
from coulisse.interfaces.jobs.formats import Row

if TYPE_CHECKING:
    from coulisse.interfaces.jobs.distributed import RayOptions
    from coulisse.interfaces.jobs.shards import Shard

log = logging.getLogger(__name__)

QUEUED = 2  # shards sent to an actor at a time: one running, one waiting, so it never waits for the driver
READY_WAIT_S = 60  # between warnings while actors wait for CPUs


class ClusterError(CoulisseError):
    """The Ray cluster could not run the job: an actor that died too often, a model that failed to load."""


@contextmanager
def connect(address: str | None):
    """Use the Ray already initialized in this process (a Python caller's, a test's), else connect to
    `address` (None: $RAY_ADDRESS, else a local Ray started for this job and stopped after it). Yields whether
    it is that local Ray, whose CPUs no autoscaler grows."""
    if ray.is_initialized():
        yield False
        return
    local = address is None and not os.environ.get("RAY_ADDRESS")
    check_reachable(address or os.environ.get("RAY_ADDRESS"))
    kwargs = {"include_dashboard": False} if local else {}
    handler = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, logging_level=logging.WARNING, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise ClusterError(f"cannot connect to the Ray cluster at {address or os.environ.get('RAY_ADDRESS')} "
                           f"({_first_line(e)}); start one with `ray start --head` or fix --address.") from None
    # ray.init makes SIGTERM exit the driver with status 15 (and its core prints a stack): the job's own handler
    # (command.stop_on_sigterm: stop like Ctrl-C, 143, the committed shards named) is put back.
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
    try:
        yield local
    finally:
        ray.shutdown()


PROBE_S = 5.0  # seconds a HOST:PORT address has to accept a connection


def check_reachable(address: str | None) -> None:
    """A `HOST:PORT` address that accepts no connection is said at once: `ray.init` would retry it for about 14
    minutes (20 tries of its GCS client, each ~41 s with Ray 2.60) inside a call that Ctrl-C and SIGTERM do not
    interrupt. `auto`, `local` and `ray://` addresses (Ray Client, which fails fast) are left to Ray."""
    import socket

    if not address or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_S).close()
    except OSError as e:
        raise ClusterError(f"cannot connect to the Ray cluster at {address} ({e.strerror or e}); start one with "
                           "`ray start --head` (its address is printed there), or fix --address / RAY_ADDRESS.") \
            from None


def plan(actors: int | None, threads: int | None, cpus: int) -> tuple[int, int]:
    """Actors and threads per actor so that actors x threads = the cluster's CPUs, where not given."""
    cpus = max(cpus, 1)
    if threads is None:
        threads = max(1, cpus // actors) if actors else 1
    if actors is None:
        actors = max(1, cpus // threads)
    return actors, threads


class ShardWorker:
    """One pipeline, loaded once on the actor's node from the model found there."""

    def __init__(self, options: RayOptions, threads: int):
        # oneDNN keeps one kernel per batch shape; read when torch loads (see command.bound_kernel_cache).
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")
        os.environ.setdefault("LRU_CACHE_CAPACITY", "16")  # ideep's cache of the same kernels
        self.error = None
        self.info: dict = {}
        self.digest = ""
        try:
            from coulisse.interfaces.jobs.row_models import describe_model, precision, row_model
            from coulisse.interfaces.jobs.state import digest, model_fingerprint

            pipe, self.predictor = row_model(options, threads)
            self.info = {**describe_model(self.predictor), "precision": precision(pipe)}
            self.digest = digest(model_fingerprint(pipe.checkpoint.directory))
        except Exception as e:  # noqa: BLE001 (reported by ready(), in one line)
            self.error = f"{type(e).__name__}: {_first_line(e)}"

    def ready(self) -> dict:
        return {"error": self.error, "info": self.info, "digest": self.digest, "pid": os.getpid(),
                "node": ray.util.get_node_ip_address()}

    def predict(self, rows: list[tuple]) -> dict:
        if self.error is not None:  # an actor restarted by Ray (its process died) whose model no longer loads there
            return {"load_error": self.error, "node": ray.util.get_node_ip_address()}
        batch = [Row({}, where, text, error) for text, error, where in rows]
        try:
            preds = self.predictor(batch)
        except InputError as e:  # an option that fails every row alike (a --stride too long)
            return {"input_error": str(e)}
        truncated, self.predictor.truncated = self.predictor.truncated, 0
        return {"preds": preds, "truncated": truncated, "digest": self.digest}


class Pool:
    """`with Pool(options) as pool:` actors started, their models loaded and checked alike; killed on exit."""

    def __init__(self, options: RayOptions, local: bool = False):
        self.options = options
        cpus = int(ray.cluster_resources().get("CPU", 0))
        self.size, self.threads = plan(options.actors, options.threads, cpus)
        if self.size * self.threads > cpus and local:  # no autoscaler: the actors past the CPUs never start
            fits = f"--actors {max(1, cpus // self.threads)}" if self.threads <= cpus else f"--threads {cpus}"
            raise InputError(f"{self.size} actors x {self.threads} threads need {self.size * self.threads} CPUs "
                             f"and this machine has {cpus}: the job would wait forever for the others. Pass {fits}, "
                             "or --address of a larger cluster.")
        if self.size * self.threads > cpus:
            log.warning("%d actors x %d threads need %d CPUs and the cluster has %d: some actors wait for CPUs "
                        "(an autoscaler may add them)", self.size, self.threads, self.size * self.threads, cpus)
        remote = ray.remote(ShardWorker).options(num_cpus=self.threads, max_restarts=options.max_restarts,
                                                 max_task_retries=options.max_restarts)
        self.actors = [remote.remote(options, self.threads) for _ in range(self.size)]
        self.pending: dict = {}  # ObjectRef -> (actor index, Shard)
        self.queued = [0] * self.size

    def __enter__(self) -> Pool:
        try:
            reports = self._ready()
        except BaseException:
            self.close()
            raise
        failed = [r for r in reports if r["error"]]
        if failed:
            self.close()
            raise ClusterError(f"the model {self.options.model} failed to load on node {failed[0]['node']}: "
                               f"{failed[0]['error']}")
        digests = {r["digest"] for r in reports}
        if len(digests) > 1:
            self.close()
            nodes = sorted({r["node"] for r in reports})
            raise ClusterError(f"the actors on nodes {', '.join(nodes)} loaded different files for "
                               f"{self.options.model}; stage the same model on every node (docs/scale-out.md).")
        self.digest, self.info = digests.pop(), reports[0]["info"]
        ran = {r["info"]["precision"] for r in reports}
        if len(ran) > 1:  # the driver gives every actor the same precision: nodes that differ are a bug
            self.close()
            raise ClusterError(f"the actors ran different precisions ({', '.join(sorted(ran))}); this is a bug.")
        self.pids = [r["pid"] for r in reports]
        log.info("%d actors x %d threads ready on %s", self.size, self.threads,
                 ", ".join(sorted({r["node"] for r in reports})))
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ready(self) -> list[dict]:
        refs = [a.ready.remote() for a in self.actors]
        while True:
            done, waiting = ray.wait(refs, num_returns=len(refs), timeout=READY_WAIT_S)
            if not waiting:
                break
            log.warning("%d of %d actors still starting (waiting for CPUs, or loading the model)", len(waiting),
                        len(refs))
        try:
            return ray.get(refs)
        except RayError as e:  # the worker process itself failed: coulisse missing on a node, out of memory
            raise ClusterError(f"an actor could not start ({_first_line(e)}); install coulisse on every node "
                               "of the cluster.") from None

    def close(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(RayError, ValueError):  # already dead
                ray.kill(actor)

    def full(self) -> bool:
        return len(self.pending) >= QUEUED * self.size

    def busy(self) -> bool:
        return bool(self.pending)

    def submit(self, shard: Shard) -> None:
        i = min(range(self.size), key=self.queued.__getitem__)
        rows = [(r.text, r.error, r.where) for r in shard.rows]
        self.pending[self.actors[i].predict.remote(rows)] = (i, shard)
        self.queued[i] += 1

    def next_done(self) -> tuple[Shard, list, int]:
        [ref], _ = ray.wait(list(self.pending), num_returns=1)
        i, shard = self.pending.pop(ref)
        self.queued[i] -= 1
        try:
            result = ray.get(ref)
        except RayActorError as e:  # restarts spent, or an actor killed for good (ray.kill, an autoscaler)
            raise ClusterError(f"an actor died and Ray did not restart it (it restarts one up to "
                               f"{self.options.max_restarts} times; {_first_line(e)}); the shards committed in "
                               f"{self.options.output} stay: rerun the same command to go on.") from None
        if "load_error" in result:
            raise ClusterError(f"the model {self.options.model} failed to load on node {result['node']} when Ray "
                               f"restarted an actor there: {result['load_error']}; the shards committed in "
                               f"{self.options.output} stay: fix the model there and rerun the same command.")
        if "input_error" in result:
            raise InputError(result["input_error"])
        if result["digest"] != self.digest:
            raise ClusterError(f"an actor restarted with other files for {self.options.model}; stage the same "
                               "model on every node and rerun the same command.")
        return shard, result["preds"], result["truncated"]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__

