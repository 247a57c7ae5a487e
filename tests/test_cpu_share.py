"""Thread counts that follow the CPUs the machine leaves (issue 25, item 11): the CPUs a cgroup
quota allows, and other processes' load read from /proc/stat (here a written copy, then the real
one beside a real CPU-bound process). The tokens/s this keeps under contention are measured by
scripts/bench_shared_cpu.py, not asserted here."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from lea_local.runtime import cpu_share
from lea_local.runtime.cpu_share import CpuShare, cgroup_cpu_limit
from tests.waiting import wait_for

HZ = os.sysconf("SC_CLK_TCK")


def write_stat(proc: Path, busy_jiffies: list[int], idle_jiffies: list[int]) -> None:
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    for n, (busy, idle) in enumerate(zip(busy_jiffies, idle_jiffies, strict=True)):
        # user nice system idle iowait irq softirq steal guest guest_nice
        lines.append(f"cpu{n} {busy} 0 0 {idle} 0 0 0 0 0 0")
    (proc / "stat").write_text("\n".join(lines) + "\n")


@pytest.fixture
def two_cpus(monkeypatch):
    monkeypatch.setattr(cpu_share, "_allowed_cpus", lambda: {0, 1})
    monkeypatch.setattr(cpu_share, "usable_cpus", lambda: 2)


def share_after(proc: Path, monkeypatch, others_cpus: float, own_cpus: float = 0.0) -> CpuShare:
    """A sampler that saw, over one second, other processes keep `others_cpus` busy while this
    process used `own_cpus`."""
    clock = iter([100.0, 101.0])
    process = iter([5.0, 5.0 + own_cpus])
    monkeypatch.setattr(cpu_share.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(cpu_share.time, "process_time", lambda: next(process))
    write_stat(proc, [0, 0], [0, 0])
    share = CpuShare(proc)
    busy = round((others_cpus + own_cpus) * HZ)
    write_stat(proc, [busy // 2, busy - busy // 2], [HZ, HZ])
    share.update()
    share._thread = object()  # sampled by hand: no background sampler
    return share


@pytest.mark.parametrize(
    ("others", "threads"),
    [(0.0, 2), (0.3, 2), (0.67, 1), (1.0, 1), (1.4, 1), (2.0, 1)],
)
def test_each_cpu_kept_busy_by_others_costs_one_thread(tmp_path, monkeypatch, two_cpus, others, threads):
    share = share_after(tmp_path, monkeypatch, others)
    assert share.others_busy() == pytest.approx(others, abs=0.02)
    assert share.threads(2) == threads


def test_this_process_s_own_cpu_time_is_not_counted_as_others(tmp_path, monkeypatch, two_cpus):
    share = share_after(tmp_path, monkeypatch, others_cpus=0.1, own_cpus=1.9)
    assert share.others_busy() == pytest.approx(0.1, abs=0.02)
    assert share.threads(2) == 2


def test_the_setting_is_the_most_ever_used(tmp_path, monkeypatch, two_cpus):
    assert share_after(tmp_path, monkeypatch, 0.0).threads(1) == 1


def test_only_the_cpus_of_this_process_s_affinity_count(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_share, "_allowed_cpus", lambda: {1})
    monkeypatch.setattr(cpu_share, "usable_cpus", lambda: 1)
    write_stat(tmp_path, [0, 0], [0, 0])
    share = CpuShare(tmp_path)
    write_stat(tmp_path, [50 * HZ, 0], [0, 50 * HZ])  # busy, but on CPU 0, which is not ours
    share.update()
    assert share.others_busy() == 0.0


def test_a_cgroup_v2_quota_on_an_ancestor_caps_the_cpus(tmp_path):
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text("0::/system.slice/lea-local@8001.service\n")
    group = tmp_path / "sys/fs/cgroup/system.slice/lea-local@8001.service"
    group.mkdir(parents=True)
    (group / "cpu.max").write_text("max 100000\n")
    (group.parent / "cpu.max").write_text("150000 100000\n")  # CPUQuota=150% on the slice
    assert cgroup_cpu_limit(tmp_path) == 1.5


def test_a_cgroup_v1_quota_and_no_quota(tmp_path):
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text("4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n")
    group = tmp_path / "sys/fs/cgroup/cpu,cpuacct/docker/abc"
    group.mkdir(parents=True)
    (group / "cpu.cfs_quota_us").write_text("-1\n")
    (group / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (group / "cpu.cfs_quota_us").write_text("200000\n")
    assert cgroup_cpu_limit(tmp_path) == 2.0


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_real_cpu_bound_process_on_every_cpu_leaves_one_thread():
    """The real /proc/stat: a busy-looping process per usable CPU is seen within seconds."""
    share = CpuShare()
    usable = share.usable
    spinners = [multiprocessing.get_context("spawn").Process(target=_spin, args=(60,)) for _ in range(usable)]
    for spinner in spinners:
        spinner.start()
    try:
        wait_for(
            lambda: time.sleep(0.5) or share.update() >= usable - 0.5,  # a window of half a second
            "the spinners' load seen",
            while_possible=lambda: all(spinner.is_alive() for spinner in spinners),
        )
        assert share.threads(usable) == 1
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.join()
