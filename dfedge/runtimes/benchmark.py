"""`dfedge bench`: time bundles against the torch FP32 eager reference in the same run.

Each bundle runs in its own process through its own `bench.py` (what a device owner runs), so load time and peak
RSS belong to that bundle alone; the reference runs in its own process with the same crop and thread count.
`python -m dfedge.runtimes.benchmark SPEC_JSON` is that reference process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..models.writing import temporary
from ..device.errors import BundleError
from ..device.files import MANIFEST, write_json
from ..device.host import device_facts, peak_rss_mb
from ..device.manifest import verify
from ..device.timing import RESULT_SCHEMA, demo_crop, time_runner
from ..device.validation import to_input

SET_SCHEMA = "dfedge-bench-set/1"
COLUMNS = ("bundle", "target", "precision", "status", "size MB", "load s", "p50 ms", "p90 ms", "p99 ms", "FPS",
           "peak RSS MB", "× torch", "photo: detect + align + score ms")


@dataclass(frozen=True)
class BenchRun:
    """How every bundle (and the torch reference) is timed."""

    runs: int = 20
    warmup: int = 3
    threads: int = 0  # 0: the runtime's default (all cores)
    device: str = "CPU"  # OpenVINO's device
    label: str | None = None  # the device's name in merged reports
    image: Path | None = None  # also a photo -> verdict through each bundle, timed per step

    def __post_init__(self) -> None:
        if self.runs < 1 or self.warmup < 0 or self.threads < 0:
            raise ValueError("--runs must be >= 1, --warmup and --threads >= 0")

    def args(self) -> list[str]:
        return (["--runs", str(self.runs), "--warmup", str(self.warmup), "--threads", str(self.threads)]
                + (["--label", self.label] if self.label else []))


def find_bundles(paths: list[Path]) -> list[Path]:
    """Bundle folders, or folders of bundles (a `dist/<name>`), in the order given."""
    out = []
    for path in map(Path, paths):
        if (path / MANIFEST).is_file():
            out.append(path)
        elif path.is_dir() and (subs := sorted(p.parent for p in path.glob(f"*/{MANIFEST}"))):
            out += subs
        else:
            raise BundleError(f"{path}: not a bundle (no {MANIFEST}) nor a folder of bundles")
    return out


def _run_json(cmd: list[str], what: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp, temporary(tmp):
        out = Path(tmp) / "result.json"
        proc = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True)
        if out.is_file():
            return json.loads(out.read_text())
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {"schema": RESULT_SCHEMA, "status": "error", "bundle": what,
                "reason": lines[-1] if lines else f"exit code {proc.returncode}"}


def bench_bundle(bundle: Path, how: BenchRun) -> dict:
    cmd = [sys.executable, str(Path(bundle) / "bench.py"), *how.args(), "--device", how.device]
    return _run_json(cmd + (["--image", str(Path(how.image).resolve())] if how.image else []), Path(bundle).name)


def reference_spec(manifest: dict, spec=None) -> dict | str:
    """The torch model a bundle was made from, as DetectorSpec fields, or why there is none, in one line. The model
    its export options name (`spec`: the one the kit's own build made it from) is taken only when its identity is the
    manifest's verified one: the same weights (each part's SHA-256, or the same seeded-random note), head, region and
    region-index rung. A free-form field alone (export_options.preset "full" on a toy bundle) never chooses it."""
    import dataclasses

    from ..eval.validate import manifest_identity
    from ..models.factory import identity
    from ..models.spec import DetectorSpec

    if spec is None:
        opts = manifest.get("export_options") or {}
        try:
            spec = DetectorSpec(**{k: opts[k] for k in ("preset", "head", "region", "dinov3_input", "region_index",
                                                        "backbone") if k in opts})
        except (TypeError, ValueError) as e:
            return f"not timed: its export options name no model of this kit ({str(e).splitlines()[0]})"
    want, have = identity(spec), manifest_identity(manifest)

    def said(weights):  # a SHA-256 by its first digits; a seeded-random note as that
        return "none" if not weights else f"{weights[:12]}…" if len(weights) == 64 else "random"

    for part in sorted(set(want["sources"]) | set(have["sources"])):
        if want["sources"].get(part) != have["sources"].get(part):
            return (f"not timed: its {part} weights ({said(have['sources'].get(part))}) are not preset {spec.preset}'s "
                    f"({said(want['sources'].get(part))})")
    for key in ("head", "region", "region_index"):
        if want[key] != have[key]:
            return f"not timed: its {key} is {have[key]!r}, its export options name {want[key]!r}"
    return dict(dataclasses.asdict(spec), random_probe=True)  # (timed, never scored: a probe's weights do not change its time)


def bench_reference(spec: dict | str, how: BenchRun) -> dict:
    """The torch reference timed in its own process; `spec` a reason (reference_spec) instead: that, as its result."""
    if isinstance(spec, str):
        return {"schema": RESULT_SCHEMA, "status": "not timed", "bundle": "torch-fp32", "target": "torch",
                "precision": "fp32", "reason": spec}
    return _run_json([sys.executable, "-m", "dfedge.runtimes.benchmark", json.dumps(spec), *how.args()], "torch-fp32")


def bench_set(bundles: list[Path], how: BenchRun, reference=reference_spec, progress=None) -> dict:
    """Every bundle, then one torch reference per distinct model among them (same crop size, rung, threads);
    each result gets `speedup_vs_torch` = reference p50 / its p50 (> 1: faster than torch eager). `reference`:
    manifest -> the DetectorSpec fields of the torch model to time, or why none (None: no reference)."""
    results, specs = [], []
    for bundle in bundles:
        manifest = verify(bundle)  # before any of the bundle's code (its bench.py) runs
        results.append(bench_bundle(bundle, how))
        specs.append(reference(manifest) if reference else {})
        if progress:
            progress(bundle.name)
    references: dict[str, dict] = {}
    if reference:
        for spec in specs:
            key = json.dumps(spec, sort_keys=True)
            if key not in references:
                references[key] = bench_reference(spec, how)
                if progress:
                    progress(f"torch {spec.get('region_index', 'exact') if isinstance(spec, dict) else ''}")
    for result, spec in zip(results, specs):
        ref = references.get(json.dumps(spec, sort_keys=True))
        if ref and ref.get("status") == "ok" and result.get("status") == "ok":
            result["speedup_vs_torch"] = ref["latency_ms"]["p50"] / result["latency_ms"]["p50"]
    return {"schema": SET_SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "references": list(references.values()), "results": results}


def table_rows(bench: dict) -> list[tuple[str, ...]]:
    """COLUMNS cells of every result of a bench_set, the references last."""

    def f(v, spec=".1f"):
        return "-" if v is None else format(v, spec)

    return [(r.get("bundle", "?"), r.get("target", "?"), r.get("precision", "?"),
             "ok" if r.get("status") == "ok" else f"{r.get('status')}: {r.get('reason', '')}"[:70],
             f(r.get("size_mb"), ".2f"), f(r.get("load_s"), ".2f"),
             *(f((r.get("latency_ms") or {}).get(p)) for p in ("p50", "p90", "p99")),
             f(r.get("fps")), f(r.get("peak_rss_mb"), ".0f"), f(r.get("speedup_vs_torch"), ".2f"), photo_cell(r.get("photo")))
            for r in bench["results"] + bench["references"]]


def photo_cell(photo: dict | None) -> str:
    if not photo:
        return "-"
    return " + ".join(f"{photo[f'{step}_ms']:.0f}" for step in ("detect", "align", "score")) + f" ({photo['faces']} faces)"


def _reference_main(argv: list[str]) -> int:
    import argparse

    import numpy as np
    import torch

    from ..models.factory import DetectorSpec, build_detector

    ap = argparse.ArgumentParser(description="Time the torch FP32 eager detector (the reference of dfedge bench).")
    ap.add_argument("spec", help="DetectorSpec fields as JSON")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--label", default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    det = build_detector(DetectorSpec(**json.loads(args.spec))).eval()
    load_s = time.perf_counter() - start
    x = torch.from_numpy(to_input(demo_crop(det.cfg.crop_size)))

    def run(image):
        with torch.no_grad():
            return det(image)

    result = {"schema": RESULT_SCHEMA, "status": "ok", "bundle": "torch-fp32", "target": "torch",
              "precision": "fp32", "region_index": json.loads(args.spec).get("region_index", "exact"),
              "size_mb": sum(p.numel() * p.element_size() for p in det.parameters()) / 1e6, "threads": threads,
              "device": "CPU", "load_s": load_s, "reference": "torch fp32 eager",
              "facts": dict(device_facts("torch", args.label), runtime="torch", runtime_version=torch.__version__),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    result.update(time_runner(run, x, args.warmup, args.runs))
    result["peak_rss_mb"] = peak_rss_mb()
    write_json(args.out, result)
    return 0 if np.isfinite(result["latency_ms"]["p50"]) else 1


if __name__ == "__main__":
    sys.exit(_reference_main(sys.argv[1:]))
