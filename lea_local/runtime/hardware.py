"""What the machine offers: an NVIDIA GPU, GPU offload in the installed llama-cpp-python."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

from lea_local.runtime.cpu_share import usable_cpus


@cache
def has_nvidia_gpu() -> bool:
    """True when an NVIDIA driver answers with at least one GPU."""
    if not (Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi")):
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return Path("/dev/nvidia0").exists()
    return out.returncode == 0 and "GPU" in out.stdout


def cuda_device_count() -> int:
    """CUDA devices CTranslate2 sees (0 without a CUDA build or a GPU)."""
    try:
        import ctranslate2
    except ImportError:
        return 0
    try:
        return ctranslate2.get_cuda_device_count()
    except Exception:  # a CPU-only build raises rather than answering 0
        return 0


@cache
def physical_cores() -> int:
    """Physical CPU cores (not hyper-threads) this process may use: the thread count llama.cpp and
    CTranslate2 run best with. Capped by the CPUs it may use (affinity, cgroup quota); falls back
    to that count."""
    logical = usable_cpus()
    try:
        cores, current_physical = set(), "0"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "physical id":
                current_physical = value.strip()
            elif key.strip() == "core id":
                cores.add((current_physical, value.strip()))
        return max(1, min(len(cores), logical)) if cores else logical
    except OSError:
        return logical
