"""Peak RSS of `dfedge reference` and of scoring a video at two sizes each: flat in the number of samples and frames
when samples and frames stream (issue 31, cause 10). Measured in one run on this host (not a test); prints one
markdown table, the ratios and the host.

    python benchmarks/streaming_memory.py                          # toy:val:100 vs 400, a 160- vs 640-frame clip
    python benchmarks/streaming_memory.py --small    # its smallest: --samples 8 24 --frames 4 16, a minute

Each measurement is a fresh process: `dfedge reference --data toy:val:N` and `dfedge score CLIP --frames N` (every
frame of an N-frame toy clip sampled, so each one is scored), its peak RSS its own ru_maxrss (os.wait4). The clips
are written by another child first (a toy clip's first frames repeated, on a 640x480 background), so that this
process stays small: a child started from it would count this process's peak as its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dfedge.device.host import cpu_isa, cpu_model

CLIPS = """import sys
from dfedge.data.toyvideo import toy_clip, write_clip
folder, sizes = sys.argv[1], [int(n) for n in sys.argv[2:]]
base = toy_clip(0, "val", min(max(sizes), 160)).frames
for n in sizes:
    write_clip(f"{folder}/clip-{n}.mp4", (base[i % len(base)] for i in range(n)))
"""


def measure(args: list[str]) -> tuple[float, float, int]:
    """(peak RSS MB, wall s, exit code) of `python -m dfedge.cli ARGS` in a fresh process."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "dfedge.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage: its peak RSS alone
    wall = time.perf_counter() - start
    if code := os.waitstatus_to_exitcode(status):
        print(f"dfedge {' '.join(args)}: exit {code}: {child.stderr.read().decode(errors='replace').strip()[-500:]}", file=sys.stderr)
    child.stderr.close()
    return usage.ru_maxrss / 1024, wall, code  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, nargs=2, default=(100, 400), metavar=("SMALL", "LARGE"), help="toy:val sizes")
    ap.add_argument("--frames", type=int, nargs=2, default=(160, 640), metavar=("SMALL", "LARGE"), help="clip lengths")
    ap.add_argument("--small", action="store_true", help="the smallest run: --samples 8 24 --frames 4 16")
    args = ap.parse_args()
    # a reference scores 8 crops a forward pass (--batch): sizes below that also measure a smaller batch
    samples, frames = ((8, 24), (4, 16)) if args.small else (tuple(args.samples), tuple(args.frames))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-c", CLIPS, tmp, *map(str, frames)], check=True)
        for n in samples:
            rows.append(("dfedge reference", f"toy:val:{n}", n, *measure(["reference", "--data", f"toy:val:{n}", "--out", f"{tmp}/r{n}.scores"])))
        for n in frames:
            out = Path(tmp) / f"clip-{n}.jsonl"
            peak = measure(["score", f"{tmp}/clip-{n}.mp4", "--frames", str(n), "--output", str(out)])
            scored = json.loads(out.read_text())["frames"] if out.is_file() else None  # what really ran
            rows.append(("dfedge score (video)", f"{n}-frame clip, {scored} frames scored", n, *peak))
    print(f"host: {cpu_model()} · {os.cpu_count()} cores · {' '.join(cpu_isa())}\n")
    print("| command | input | peak RSS MB | wall s | exit |\n|---|---|---|---|---|")
    for command, what, _, mb, wall, code in rows:
        print(f"| {command} | {what} | {mb:.0f} | {wall:.0f} | {code} |")
    print()
    for small, large in (rows[0:2], rows[2:4]):
        growth = (large[3] - small[3]) / (large[2] - small[2])
        print(f"{small[0]}: peak {large[1]} / {small[1]}: {large[3] / small[3]:.2f}x "
              f"({growth * 1024:+.1f} KB per {'sample' if small[0].endswith('reference') else 'frame'})")


if __name__ == "__main__":
    main()
