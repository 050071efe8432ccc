"""Usable CPUs: the affinity mask bounded by the cgroup v2 quota (decides whether large batches hop threads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlrollout_serving.server.cpus import quota_cpus, usable_cpus


@pytest.mark.parametrize(
    ("line", "cpus"),
    [
        ("max 100000\n", None),
        ("100000 100000\n", 1),
        ("50000 100000", 1),  # half a CPU still runs one thread at a time
        ("150000 100000", 2),
        ("400000 100000", 4),
        ("", None),
        ("garbage", None),
        ("x 100000", None),
        ("0 100000", None),
        ("-1 100000", None),  # cgroup v1's cfs_quota_us for "no limit"
    ],
)
def test_quota_cpus_reads_cgroup_v2_cpu_max(line: str, cpus: int | None) -> None:
    assert quota_cpus(line) == cpus


def test_usable_cpus_is_the_affinity_mask_bounded_by_the_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    assert usable_cpus(tmp_path / "missing", tmp_path / "missing") == affinity  # no cgroup: the mask alone
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(cpu_max, tmp_path / "missing") == affinity
    cpu_max.write_text("100000 100000\n")
    assert usable_cpus(cpu_max, tmp_path / "missing") == 1
    cpu_max.write_text(f"{(affinity + 3) * 100000} 100000\n")
    assert usable_cpus(cpu_max, tmp_path / "missing") == affinity  # a quota above the mask does not add CPUs


def test_usable_cpus_reads_the_cgroup_v1_quota_when_there_is_no_v2_file(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert usable_cpus(tmp_path / "no-cpu.max", v1) == affinity
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")  # a pod with limits.cpu: 1
    assert usable_cpus(tmp_path / "no-cpu.max", v1) == 1
