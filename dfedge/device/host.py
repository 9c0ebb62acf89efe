"""Facts of the machine a bundle runs on: CPU model and the ISA extensions that decide the runtimes' kernels, peak
memory, the runtime's version and the accelerators it sees. Every benchmark and validation result names them."""

from __future__ import annotations

import logging
import math
import os
import platform
from pathlib import Path

from .formats import FORMATS


def peak_rss_mb() -> float | None:
    """This process's peak resident memory. Linux: VmHWM, because ru_maxrss carries the parent's peak across
    fork + exec (a bundle timed from a 250 MB parent would report 250 MB whatever it used)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if platform.system() == "Darwin" else rss / 2**10  # bytes on macOS, KiB elsewhere


def memory_bytes() -> int | None:
    """The memory this process can hold at most: the host's physical memory (sysconf pages), or the container's
    limit (cgroup v2 memory.max) when that is smaller; None where neither can be read."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # Windows, or a platform without these names
        total = None
    try:
        limit = int(Path("/sys/fs/cgroup/memory.max").read_text().strip())  # "max": no limit (ValueError)
    except (OSError, ValueError):
        limit = None
    known = [b for b in (total, limit) if b and b > 0]
    return min(known) if known else None


def cpus() -> int:
    """The CPUs this process may run on: its affinity (Linux), within the container's CPU quota (cgroup v2 cpu.max),
    else os.cpu_count()."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()  # "max 100000": no quota (ValueError)
        count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


def capped(option: str, value: int, most: int, what: str) -> int:
    """The one rule for how many workers or threads a run starts (`--threads`, `threads` in a build file, bench.py's
    `--threads`, `--workers` on Ray): a whole number (not a bool, a float or a string: a ValueError naming `option`),
    at most `most`, which `what` names (the CPUs of this host, of the Ray cluster). More is capped, with one line:
    a warning of the logger "dfedge" (printed as is on stderr where nothing configured logging)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{option} {value!r}: not a whole number")
    if value <= most:
        return value
    logging.getLogger("dfedge").warning("%s %d capped to %d, %s", option, value, most, what)
    return most


def cpu_model() -> str:
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                return line.split(":", 1)[1].strip()
    if platform.system() == "Darwin":  # pragma: no cover
        import subprocess

        out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True)
        return out.stdout.strip() or platform.processor()
    return platform.processor() or platform.machine()


# The instruction-set extensions that decide which kernels the runtimes pick (INT8 dot products, BF16/FP16 math,
# matrix tiles): the same bundle can decide differently on hosts that differ in these, so every result names them.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "sve", "bf16")


def cpu_isa() -> list[str]:
    """The ISA_FLAGS this CPU reports (Linux /proc/cpuinfo flags or ARM Features); empty elsewhere."""
    if not Path("/proc/cpuinfo").is_file():
        return []
    for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
        if line.lower().startswith(("flags", "features")):
            have = set(line.split(":", 1)[1].split())
            return [f for f in ISA_FLAGS if f in have]
    return []


def runtime_version(target: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(FORMATS[target].package if target in FORMATS else target)
    except metadata.PackageNotFoundError:
        return None


def accelerators(target: str) -> list[str]:
    """Devices the target's runtime itself reports beyond the CPU (OpenVINO GPU/NPU, ORT execution providers)."""
    fmt = FORMATS.get(target)
    if fmt is None or fmt.accelerators is None:
        return []
    try:
        return fmt.accelerators()
    except Exception:  # noqa: BLE001 - device facts are best effort
        return []


def device_facts(target: str, label: str | None = None) -> dict:
    return {"label": label or f"{platform.node()} ({cpu_model()})", "host": platform.node(), "cpu": cpu_model(),
            "isa": cpu_isa(), "cores": os.cpu_count(), "os": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version(), "runtime": FORMATS[target].package if target in FORMATS else target,
            "runtime_version": runtime_version(target), "accelerators": accelerators(target)}
