"""How many CPUs this process may really use, now.

llama.cpp's threads wait for each other at every step of a token by spinning: when another
process takes one of the CPUs, the thread that lost its CPU stalls all the others, and 2 threads
on a 2-core machine beside one CPU-bound process made 6.6 tokens/s where 1 thread made 14.8 (70
quiet). So the thread count follows what the machine leaves us: the CPUs we may run on (affinity,
and a cgroup's CPU quota, e.g. a container's or systemd's `CPUQuota=`), less those other processes
kept busy over the last second (from /proc/stat, our own CPU time taken out). On a quiet machine
that is every usable CPU; beside one busy process, one fewer.
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

SAMPLE_SECONDS = 0.5
"""How often the background sampler reads /proc/stat; a thread count follows a competitor that
starts or stops within about a second."""
BUSY_SHARE_TAKEN = 0.5
"""Other processes' load, in CPUs, that costs us one thread once reached: below half a CPU of
theirs a thread of ours is rarely preempted for long."""


def cgroup_cpu_limit(root: Path = Path("/")) -> float | None:
    """The CPUs a cgroup quota allows this process (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`),
    None when there is no quota."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and controllers == "":  # cgroup v2: the quota may sit on any ancestor
            limits = []
            group = root / "sys/fs/cgroup" / path.lstrip("/")
            while True:
                limits.append(_v2_limit(group / "cpu.max"))
                if group == root / "sys/fs/cgroup" or group.parent == group:
                    break
                group = group.parent
            found = [limit for limit in limits if limit is not None]
            return min(found) if found else None
        if "cpu" in controllers.split(","):
            base = root / "sys/fs/cgroup" / controllers
            for group in (base / path.lstrip("/"), base):
                try:
                    quota = int((group / "cpu.cfs_quota_us").read_text())
                    period = int((group / "cpu.cfs_period_us").read_text())
                except (OSError, ValueError):
                    continue
                return quota / period if quota > 0 and period > 0 else None
    return None


def _v2_limit(cpu_max: Path) -> float | None:
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity, capped by its cgroup's quota (rounded up:
    a quota of 1.5 CPUs keeps two threads busy three quarters of the time)."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    return max(1, min(allowed, math.ceil(limit) if limit else allowed))


def _allowed_cpus() -> set[int] | None:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None


class CpuShare:
    """Other processes' CPU load over the last moment, sampled in the background, and the
    thread count it leaves for a compute engine."""

    def __init__(self, proc: Path = Path("/proc"), interval: float = SAMPLE_SECONDS) -> None:
        self._proc = proc
        self._interval = interval
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._cpus = _allowed_cpus()
        self.usable = usable_cpus()
        self._lock = threading.Lock()
        self._last = self._sample()
        self._others = 0.0
        self._thread: threading.Thread | None = None

    def _sample(self) -> tuple[float, float, float] | None:
        """(wall seconds, CPU seconds busy on our CPUs, CPU seconds of this process)."""
        try:
            stat = (self._proc / "stat").read_text()
        except OSError:
            return None
        busy = 0
        for line in stat.splitlines():
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            if self._cpus is not None and int(name[3:]) not in self._cpus:
                continue
            values = [int(v) for v in fields[:8]]
            # user nice system idle iowait irq softirq steal: all but idle and iowait were not ours
            # to use (steal: the hypervisor gave the CPU to another guest).
            busy += sum(values) - values[3] - values[4]
        return time.monotonic(), busy / self._hz, time.process_time()

    def update(self) -> float:
        """Sample now; the other processes' load since the previous sample, in CPUs."""
        current = self._sample()
        with self._lock:
            previous, self._last = self._last, current
            if previous is None or current is None or current[0] - previous[0] <= 0:
                return self._others
            wall = current[0] - previous[0]
            others = max(0.0, (current[1] - previous[1]) - (current[2] - previous[2])) / wall
            self._others = others
            return others

    def others_busy(self) -> float:
        """CPUs other processes kept busy over the last sample (starts the sampler)."""
        self._start()
        with self._lock:
            return self._others

    def threads(self, most: int) -> int:
        """Threads for a compute engine allowed at most `most`: one fewer per CPU other
        processes keep busy (counted from BUSY_SHARE_TAKEN of one), never under one."""
        taken = math.floor(self.others_busy() + (1 - BUSY_SHARE_TAKEN))
        return max(1, min(most, self.usable - taken))

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="cpu-share", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            self.update()


_shared: CpuShare | None = None
_shared_lock = threading.Lock()


def shared_cpu_share() -> CpuShare:
    """The process's one sampler (every engine reads the same machine)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = CpuShare()
        return _shared
