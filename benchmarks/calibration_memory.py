"""Peak RSS of one quantized rung's build with glibc's default allocator and with the kit's fixed mmap threshold
(dfedge/allocator.py), measured in one run on this host (not a test). Prints one markdown table and the host.

    python benchmarks/calibration_memory.py --target executorch --precision int8 --calib-size 300

Each side is a fresh process running `dfedge build --target T --precision P --data toy:val:40 --bench-runs 0`; on
the default side `dfedge.allocator.fixed_mmap_threshold` is replaced by a no-op before the CLI runs, so glibc's dynamic
threshold applies. Peak RSS is each child's own ru_maxrss (os.wait4).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from dfedge.device.host import cpu_isa, cpu_model

CLI = "import sys, dfedge.allocator as a; {patch}from dfedge.cli import app; app(sys.argv[1:])"


def measure(args, env: dict, patch: str) -> tuple[float, float, int]:
    """(peak RSS GB, wall s, exit code) of one build in a fresh process."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-c", CLI.format(patch=patch), "build", "--target", args.target, "--precision", args.precision,
               "--data", "toy:val:40", "--calib-size", str(args.calib_size), "--bench-runs", "0", "--out", out]
        start = time.perf_counter()
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage: its peak RSS alone
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1e6, wall, child.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="executorch")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--calib-size", type=int, default=300)
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    fixed = measure(args, env, "")
    default = measure(args, env, "a.fixed_mmap_threshold = lambda: False; ")
    print(f"host: {cpu_model()} · {os.cpu_count()} cores · {' '.join(cpu_isa())}")
    print(f"rung: {args.target} {args.precision}, --calib-size {args.calib_size}\n")
    print("| allocator | peak RSS GB | wall s | exit |\n|---|---|---|---|")
    for name, (gb, wall, code) in [("glibc default (threshold up to 32 MiB)", default), ("fixed 128 KiB (the kit)", fixed)]:
        print(f"| {name} | {gb:.2f} | {wall:.0f} | {code} |")
    print(f"\npeak ratio default / fixed: {default[0] / fixed[0]:.2f}")


if __name__ == "__main__":
    main()
