"""Throughput of --engine ray with 1 and 2 actors (one torch thread each), with one actor on the default share of the
CPUs, and one process, measured in one run on this host (not a test). Prints one markdown table and the host.

    python benchmarks/distributed.py --clips 8 --faces 6

Two workloads, each timed end to end as a user runs it (the actor pool's start, each actor opening the model once,
included; Ray itself started once before):
- clips: `dfedge score` on toy clips (mp4 written by make-toy --video): decode, detect, align and score every frame
  (16) of each clip with the shipped toy detector: the front end's share is large.
- full: `dfedge reference` on aligned toy crops with the paper's architecture at full size (DINOv3 ViT-L/16 + FaRL
  ViT-B/16 parser, seeded random weights: the time is the architecture's): model bound.
One process uses every core of the host in torch; a Ray actor gets its share (one core each here).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dfedge.data.sources import open_set, write_toy
from dfedge.distributed import RayEngine, start
from dfedge.eval.scores import score_set
from dfedge.models.factory import DetectorSpec, build_detector
from dfedge.runtimes.recipe import Recipe
from dfedge.runtimes.reference import torch_runner
from dfedge.device.host import cpu_isa, cpu_model, peak_rss_mb
from dfedge.scoring import ScoreOptions, open_detector, score_paths, score_paths_on


# (actors, torch threads each): one actor on one core, two on one core each (the pool's scaling), and one actor with
# the default share of a 2-CPU Ray (all but half a CPU, rounded up: both cores)
POOLS = ((1, 1), (2, 1), (1, None))


def pool_name(workers: int, threads: int | None) -> str:
    return f"ray, {workers} actor{'s' * (workers > 1)} × {threads or 'default'} thread{'s' * (threads != 1)}"


def timed(fn) -> tuple[float, object]:
    begin = time.perf_counter()
    out = fn()
    return time.perf_counter() - begin, out


def clips(n: int, folder: Path) -> dict[str, tuple[float, list]]:
    write_toy(folder, n, "test", video=True)
    paths, spec, options = [folder], DetectorSpec(), ScoreOptions()
    out = {"one process": timed(lambda: list(score_paths(open_detector(None, spec), paths, options)))}  # opened in the time, as an actor's
    for workers, threads in POOLS:
        engine = RayEngine(workers=workers, threads=threads)
        out[pool_name(workers, threads)] = timed(lambda: list(score_paths_on(engine, (None, spec, None), paths, options)))
    logits = {name: [r["logit"] for r in recs] for name, (_, recs) in out.items()}
    first = np.asarray(next(iter(logits.values())), float)
    assert all(np.allclose(np.asarray(v, float), first, atol=1e-5, equal_nan=True) for v in logits.values()), logits
    return {name: (t, len(recs)) for name, (t, recs) in out.items()}


def full(n: int) -> dict[str, tuple[float, int]]:
    spec, data = DetectorSpec(preset="full", random_probe=True), open_set(f"toy:test:{n}")
    out = {"one process": timed(lambda: score_set(torch_runner(build_detector(spec)), data, batch=1))}  # model built in the time, as an actor's
    print(f"peak RSS (VmHWM) of this process after the one-process full-size run: {peak_rss_mb() * 2**20 / 1e9:.2f} GB")
    for workers, threads in POOLS:
        engine = RayEngine(workers=workers, threads=threads)
        out[pool_name(workers, threads)] = timed(lambda: engine(None, data, batch=1, recipe=Recipe("torch", spec=spec)))
    first = next(iter(out.values()))[1].logits
    assert all(np.abs(s.logits - first).max() <= 1e-3 for _, s in out.values())
    return {name: (t, len(s)) for name, (t, s) in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=8, help="toy clips (real and fake), 16 frames scored each")
    ap.add_argument("--faces", type=int, default=6, help="aligned crops through the full-size model (0: skip)")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    start(None)  # once, outside the timings
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, results, unit in (("clips: decode, detect, align, score (toy)", clips(args.clips, Path(tmp)), "clips"),
                                    *((("full: reference, ViT-L/16 + FaRL-B", full(args.faces), "faces"),) if args.faces else ())):
            base = results[pool_name(1, 1)][0]
            for engine, (seconds, count) in results.items():
                rows.append(f"| {name} | {engine} | {count} {unit} | {seconds:.1f} | {count / seconds:.3f} | {base / seconds:.2f} |")
    print(f"host: {cpu_model()}, {cores} cores; ISA: {', '.join(cpu_isa())}; torch {torch.__version__}")
    print("| workload | engine | work | wall s | per s | vs 1 actor × 1 thread |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
