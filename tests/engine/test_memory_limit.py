"""A container's memory limit (engine/memory_limit.py), read from cgroup v1 and v2 as their files are laid out (a
folder standing for `/`), and the resident set it is compared with."""

from __future__ import annotations

from pathlib import Path

import pytest

from coulisse.engine.memory_limit import memory_limit, resident_bytes

V1 = "35 31 0:32 {root} /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
V2 = "41 31 0:38 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n"


def layout(root: Path, cgroup: str, mountinfo: str, files: dict[str, str]) -> Path:
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    (root / "proc/self/mountinfo").write_text("22 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n" + mountinfo)
    for path, text in files.items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(text)
    return root


def test_v1_the_tightest_of_the_cgroup_and_its_ancestors(tmp_path):
    base = "/sys/fs/cgroup/memory"
    root = layout(tmp_path / "a", "4:memory:/pods/p1\n", V1.format(root="/"),
                  {f"{base}/memory.limit_in_bytes": "9223372036854771712\n",  # v1's "no limit"
                   f"{base}/pods/memory.limit_in_bytes": "1073741824\n",
                   f"{base}/pods/p1/memory.limit_in_bytes": "314572800\n"})
    assert memory_limit(root) == 314_572_800
    root = layout(tmp_path / "b", "4:memory:/pods/p1\n", V1.format(root="/"),
                  {f"{base}/pods/memory.limit_in_bytes": "9223372036854771712\n",
                   f"{base}/pods/p1/memory.limit_in_bytes": "9223372036854771712\n"})
    assert memory_limit(root) is None


def test_v2_memory_max_in_a_namespace(tmp_path):
    assert memory_limit(layout(tmp_path / "a", "0::/\n", V2, {"/sys/fs/cgroup/memory.max": "300000000\n"})) \
        == 300_000_000
    assert memory_limit(layout(tmp_path / "b", "0::/\n", V2, {"/sys/fs/cgroup/memory.max": "max\n"})) is None
    assert memory_limit(layout(tmp_path / "c", "0::/\n", V2, {"/sys/fs/cgroup/memory.max": "lots\n"})) is None
    assert memory_limit(tmp_path / "nothing") is None


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux's /proc")
def test_the_resident_set_is_this_process():
    held = resident_bytes()
    assert held is not None and 10_000_000 < held < 100_000_000_000
    ballast = bytearray(64_000_000)  # written: resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    assert resident_bytes() >= held + 50_000_000
    del ballast
