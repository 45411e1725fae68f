"""A container's CPU quota caps the thread count coulisse chooses (engine/cpu_limit.py): read from cgroup v1 and v2
as their files are laid out (a folder standing for `/`), from a real cgroup where this machine lets a test make
one, and applied where coulisse chooses a count (the engine, the server's policy, a command's process)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

import coulisse
from coulisse.engine import cpu_limit as limits
from coulisse.engine import engine as engine_module
from coulisse.engine import threads as threads_module
from coulisse.engine.cpu_limit import in_cpus, read_cpu_limit
from coulisse.engine.threads import thread_policy
from coulisse.interfaces import options

V1_MOUNT = "32 31 0:29 {root} /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,{controllers}\n"
V2_MOUNT = "41 31 0:38 {root} {point} rw,relatime - cgroup2 cgroup2 rw\n"
OTHER_MOUNTS = ("22 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n"
                "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n")


def layout(root: Path, cgroup: str, mountinfo: str, files: dict[str, str]) -> Path:
    """A folder laid out as `/`: /proc/self/cgroup, /proc/self/mountinfo and the cgroup files given."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    (root / "proc/self/mountinfo").write_text(OTHER_MOUNTS + mountinfo)
    for path, text in files.items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(text)
    return root


def v1(root: Path, path: str, quotas: dict[str, int], controllers: str = "cpu,cpuacct", mount_root: str = "/",
       period: int = 100_000) -> Path:
    """cgroup v1's cpu controller at /sys/fs/cgroup/cpu (mounted from `mount_root`), the process in `path`,
    `quotas` (cpu.cfs_quota_us, -1: none) for folders under the mount."""
    files = {}
    for folder, quota in quotas.items():
        base = "/sys/fs/cgroup/cpu" + folder.rstrip("/")
        files[f"{base}/cpu.cfs_quota_us"] = f"{quota}\n"
        files[f"{base}/cpu.cfs_period_us"] = f"{period}\n"
    return layout(root, f"4:memory:/x\n3:{controllers}:{path}\n1:name=systemd:/\n0::/\n",
                  V1_MOUNT.format(root=mount_root, controllers=controllers), files)


def test_v1_the_process_cgroup_and_its_ancestors_the_tightest_applies(tmp_path):
    assert read_cpu_limit(v1(tmp_path / "a", "/pods/p1", {"/": -1, "/pods": 150_000, "/pods/p1": -1})) == 1.5
    assert read_cpu_limit(v1(tmp_path / "b", "/pods/p1", {"/": -1, "/pods": 300_000, "/pods/p1": 50_000})) == 0.5
    assert read_cpu_limit(v1(tmp_path / "c", "/pods/p1", {"/": -1, "/pods": -1, "/pods/p1": -1})) is None
    # a period other than 100 ms; the controller mounted alone ("cpu", as on this project's machines)
    assert read_cpu_limit(v1(tmp_path / "d", "/", {"/": 25_000}, controllers="cpu", period=50_000)) == 0.5


def test_v1_a_docker_container_sees_its_own_cgroup_at_the_mount_point(tmp_path):
    """Docker without a cgroup namespace: /proc/self/cgroup names /docker/<id>, mounted from that same path."""
    root = v1(tmp_path, "/docker/abc", {"/": 200_000}, mount_root="/docker/abc")
    assert read_cpu_limit(root) == 2.0


def test_v2_cpu_max_in_a_namespace_and_not(tmp_path):
    """A container's own view ("0::/", the mount its cgroup) and a host's (the path under the mount)."""
    only_v2 = "0::/\n"
    root = layout(tmp_path / "ns", only_v2, V2_MOUNT.format(root="/", point="/sys/fs/cgroup"),
                  {"/sys/fs/cgroup/cpu.max": "150000 100000\n"})
    assert read_cpu_limit(root) == 1.5
    root = layout(tmp_path / "max", only_v2, V2_MOUNT.format(root="/", point="/sys/fs/cgroup"),
                  {"/sys/fs/cgroup/cpu.max": "max 100000\n"})
    assert read_cpu_limit(root) is None
    root = layout(tmp_path / "host", "0::/kubepods.slice/pod1.slice/cri-x.scope\n",
                  V2_MOUNT.format(root="/", point="/sys/fs/cgroup"),
                  {"/sys/fs/cgroup/cpu.max": "max 100000\n",
                   "/sys/fs/cgroup/kubepods.slice/cpu.max": "max 100000\n",
                   "/sys/fs/cgroup/kubepods.slice/pod1.slice/cpu.max": "400000 100000\n",
                   "/sys/fs/cgroup/kubepods.slice/pod1.slice/cri-x.scope/cpu.max": "max 100000\n"})
    assert read_cpu_limit(root) == 4.0


def test_both_hierarchies_the_tightest_and_a_mount_point_with_a_space(tmp_path):
    """A hybrid host (v1's cpu controller and the unified v2 tree, as on this project's machines); mountinfo writes
    a space as \\040."""
    mounts = (V1_MOUNT.format(root="/", controllers="cpu")
              + V2_MOUNT.format(root="/", point="/sys/fs/cgroup/uni\\040fied"))
    root = layout(tmp_path, "3:cpu:/\n0::/job\n", mounts,
                  {"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "300000\n",
                   "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
                   "/sys/fs/cgroup/uni fied/job/cpu.max": "120000 100000\n"})
    assert read_cpu_limit(root) == 1.2


@pytest.mark.parametrize("broken", ["no proc", "no cgroup files", "garbage", "zero period", "no mount"])
def test_what_cannot_be_read_is_no_limit(tmp_path, broken):
    if broken == "no proc":
        assert read_cpu_limit(tmp_path) is None
        return
    quota, period = {"garbage": ("a lot", "100000"), "zero period": ("100000", "0")}.get(broken, ("100000", "100000"))
    files = {} if broken == "no cgroup files" else {"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": quota,
                                                  "/sys/fs/cgroup/cpu/cpu.cfs_period_us": period}
    mounts = "" if broken == "no mount" else V1_MOUNT.format(root="/", controllers="cpu")
    assert read_cpu_limit(layout(tmp_path, "3:cpu:/\n", mounts, files)) is None


@pytest.mark.parametrize(("limit", "cap"), [(None, None), (0.3, 1), (1.0, 1), (1.5, 2), (2.0, 2), (7.25, 8)])
def test_the_cap_is_the_quota_rounded_up(monkeypatch, limit, cap):
    """1.5 CPUs: 2 threads (measured faster than 1 under that quota: docs/benchmarks.md)."""
    monkeypatch.setattr(limits, "cpu_limit", lambda: limit)
    assert limits.thread_cap() == cap


def test_quotas_in_words():
    assert (in_cpus(1.0), in_cpus(0.5), in_cpus(1.5), in_cpus(4.0)) == ("1 CPU", "0.5 CPUs", "1.5 CPUs", "4 CPUs")


@pytest.fixture
def four_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(previous)


def forward_counts(pipe, monkeypatch) -> list[int]:
    seen: list[int] = []
    forward = pipe.engine.forward
    monkeypatch.setattr(pipe.engine, "forward",
                        lambda *a, **k: seen.append(torch.get_num_threads()) or forward(*a, **k))
    return seen


def test_a_pipeline_without_a_count_runs_at_most_the_cap_and_gives_torchs_back(tf_camembert_dir, monkeypatch,
                                                                               four_threads):
    monkeypatch.setattr(engine_module, "thread_cap", lambda: 2)
    pipe = coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir))
    seen = forward_counts(pipe, monkeypatch)
    pipe("Un film magnifique.")
    assert seen == [2] and torch.get_num_threads() == 4  # the host program's count, given back
    torch.set_num_threads(1)  # under the cap: the caller's own count stands
    pipe("Un film magnifique.")
    assert seen == [2, 1]
    mine = coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir), threads=3)  # the user's count wins
    seen = forward_counts(mine, monkeypatch)
    mine("Un film magnifique.")
    assert seen == [3]
    monkeypatch.setattr(engine_module, "thread_cap", lambda: None)  # no limit: torch's count, untouched
    torch.set_num_threads(4)
    seen = forward_counts(pipe, monkeypatch)
    pipe("Un film magnifique.")
    assert seen == [4]


def test_the_servers_policy_and_a_commands_process_are_capped(monkeypatch, four_threads, caplog):
    monkeypatch.setattr(threads_module, "thread_cap", lambda: 2)
    monkeypatch.setattr(threads_module, "cpu_limit", lambda: 1.5)
    policy = thread_policy(None, spin=True)
    assert policy.as_dict() == {"threads": 2, "chosen_by": "coulisse", "idle_threads_spin": True, "cpu_limit": 1.5}
    assert policy.describe() == "2 threads (coulisse, under a CPU limit of 1.5 CPUs); idle threads spin"
    assert thread_policy(3, spin=True).as_dict()["threads"] == 3  # --threads: the user's count, over the cap too
    monkeypatch.setattr(limits, "cpu_limit", lambda: 1.5)
    with caplog.at_level(logging.INFO, logger="coulisse.interfaces.options"):
        options.cap_threads()
    assert torch.get_num_threads() == 2
    assert "2 CPU threads rather than 4: this process's cgroup allows 1.5 CPUs (--threads to choose)" in caplog.text


@contextlib.contextmanager
def real_cgroup(quota_us: int):
    """A cgroup of this machine with `quota_us` per 100 ms (v1's cpu controller or v2), yielding the file to write
    a PID into; skips where a test cannot make one (not root, no writable cpu controller)."""
    name = f"coulisse-test-{uuid.uuid4().hex[:8]}"
    v1_root, v2_root = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")
    if (v1_root / "cpu.cfs_quota_us").exists():
        folder, limit_file, text = v1_root / name, "cpu.cfs_quota_us", str(quota_us)
    elif (v2_root / "cgroup.controllers").exists() and "cpu" in (v2_root / "cgroup.subtree_control").read_text():
        folder, limit_file, text = v2_root / name, "cpu.max", f"{quota_us} 100000"
    else:
        pytest.skip("no cgroup cpu controller this test can write to")
    try:
        folder.mkdir()
    except OSError as e:
        pytest.skip(f"cannot make a cgroup here: {e}")
    try:
        (folder / limit_file).write_text(text)
        yield folder / "cgroup.procs"
    finally:
        for _ in range(50):  # the processes in it have exited; the kernel lets go of it shortly after
            try:
                folder.rmdir()
                break
            except OSError:
                subprocess.run(["sleep", "0.1"], check=False)


def test_a_real_cgroup_of_one_cpu_caps_a_commands_threads(tmp_path):
    """`coulisse info --json` in a cgroup of 1 CPU (100 ms per 100 ms): the quota read, the count 1."""
    with real_cgroup(100_000) as procs:
        script = (f"import os, sys; open({str(procs)!r}, 'w').write(str(os.getpid())); "
                  "from coulisse.interfaces.cli import main; sys.argv = ['coulisse', 'info', '--json']; main()")
        env = {**os.environ, "COULISSE_CACHE": str(tmp_path)}
        env.pop("OMP_NUM_THREADS", None)
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["cpu_limit"] == 1.0
    assert info["threads"] == 1
