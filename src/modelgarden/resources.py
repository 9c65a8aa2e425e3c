"""What this machine has: CPU, memory, disk for the store, and GPUs.

Read through ``psutil``, and NVIDIA's management library (``pynvml``) when a driver is
installed; with no driver the GPU list is simply empty. Every call reads the system, so
callers on the event loop run :func:`machine` in a thread.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil


@dataclass(frozen=True)
class GPU:
    """One GPU as NVML reports it."""

    index: int
    name: str
    memory_total: int
    memory_free: int


@dataclass(frozen=True)
class Machine:
    """A snapshot of this machine's resources."""

    system: str
    cpu_model: str
    cpu_count: int
    ram_total: int
    ram_available: int
    disk_path: str
    disk_total: int
    disk_free: int
    gpus: list[GPU] = field(default_factory=list)
    gpu_offload: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as JSON-ready data."""
        return asdict(self)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _disk(path: Path) -> tuple[str, int, int]:
    """Usage of the file system holding ``path`` (its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return str(path), usage.total, usage.free


def gpus() -> list[GPU]:
    """NVIDIA GPUs, or none when NVML (the driver's library) is absent."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        found = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            found.append(
                GPU(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    memory_total=int(memory.total),
                    memory_free=int(memory.free),
                )
            )
        return found
    except pynvml.NVMLError:
        return []
    finally:
        pynvml.nvmlShutdown()


#: ``  CUDA0: NVIDIA H100 80GB HBM3 (81079 MiB, 80500 MiB free)``
_DEVICE = re.compile(r"^\s+(\S+): (.*) \((\d+) MiB, (\d+) MiB free\)\s*$")


@functools.lru_cache(maxsize=4)
def engine_devices(server: str = "") -> tuple[str, ...]:
    """The accelerators the engine can offload to (``--list-devices``), asked once.

    ``server`` is a ``llama-server`` binary; empty: the engine from the xllamacpp wheel.
    Asked in a child process, so the gateway never loads the engine's library itself.
    """
    program = [server] if server else [sys.executable, "-m", "modelgarden.runner"]
    try:
        out = subprocess.run(
            [*program, "--list-devices"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(f"{m[1]}: {m[2]}" for line in out.splitlines() if (m := _DEVICE.match(line)))


def gpu_offload(server: str = "") -> bool:
    """Whether the engine can put layers on a GPU (a CUDA, ROCm, Vulkan or Metal build)."""
    return bool(engine_devices(server))


def offload_memory(server: str = "") -> int:
    """Free memory of the largest GPU the engine can offload to (0: it runs on the CPU).

    The engine is asked (a child process) only when the machine has a GPU at all.
    """
    found = gpus()
    if not found or not gpu_offload(server):
        return 0
    return max(g.memory_free for g in found)


def machine(store: Path, server: str = "") -> Machine:
    """This machine's resources now; ``store`` is the models folder whose disk matters,
    ``server`` the engine binary (empty: the wheel's)."""
    memory = psutil.virtual_memory()
    disk_path, disk_total, disk_free = _disk(store)
    found = gpus()
    return Machine(
        system=f"{platform.system()} {platform.release()} {platform.machine()}",
        cpu_model=_cpu_model(),
        cpu_count=os.cpu_count() or 1,
        ram_total=int(memory.total),
        ram_available=int(memory.available),
        disk_path=disk_path,
        disk_total=disk_total,
        disk_free=disk_free,
        gpus=found,
        gpu_offload=bool(found) and gpu_offload(server),
    )
