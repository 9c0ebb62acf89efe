"""Full-size quantization once per OpenVINO/ONNX/TFLite rung: sizes and latency on this host (not a test).

The full preset has random weights here, so AUC gates are meaningless: this measures what compression does to
size and speed, and parity against torch on toy crops. Usage:

    python benchmarks/quantize_fullsize.py --calib 8 --runs 3 --out bench_quant.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from dfedge.data.calibration import calibration_set
from dfedge.data.sources import toy_crops
from dfedge.eval.gate import check_parity
from dfedge.export.job import Job
from dfedge.models.factory import DetectorSpec, build_detector
from dfedge.runtimes import open_runtime, torch_runner
from dfedge.device.timing import time_runner
from dfedge.targets import TARGETS

RUNGS = [("openvino", "fp32"), ("openvino", "int8-weights"), ("openvino", "int8"), ("openvino", "int4-weights"),
         ("onnx", "fp32"), ("onnx", "int8-weights"), ("onnx", "int8")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench_quant.json"))
    ap.add_argument("--rung", action="append", help="TARGET:PRECISION to run (repeatable; default all)")
    args = ap.parse_args()
    rungs = [tuple(r.split(":")) for r in args.rung] if args.rung else RUNGS
    torch.set_num_threads(2)
    det = build_detector(DetectorSpec(preset="full"))
    calib = calibration_set(f"toy:train:{args.calib}", args.calib)
    crop = toy_crops(1)  # [1, 3, 448, 448]
    reference = torch_runner(det)
    start = time.perf_counter()
    reference(crop)
    torch_ms = (time.perf_counter() - start) * 1e3
    rows, caches = [], {target: {} for target in TARGETS}
    for target, precision in rungs:
        out = Path(tempfile.mkdtemp(prefix=f"{target}-{precision}-"))
        start, report = time.perf_counter(), {}
        job = Job(det, TARGETS[target], precision, "full", out.name, {}, {}, crop, calib, cache=caches[target])
        TARGETS[target].convert_for(precision)(job, out, report)  # the exporter or the quantizer of the table
        seconds = time.perf_counter() - start
        runner, _ = open_runtime(out, target, threads=2)
        parity = check_parity(reference, runner, crop, precision)
        size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
        rows.append({"target": target, "precision": precision, "size_mb": size, "quantize_s": seconds,
                     "p50_ms": time_runner(runner, crop, 1, args.runs)["latency_ms"]["p50"],
                     "max_abs_logit": parity.max_abs_logit, "mask_agreement": parity.mask_agreement,
                     "tool": report.get("tool", "export")})
        print(json.dumps(rows[-1]), flush=True)
    fp32 = {r["target"]: r["size_mb"] for r in rows if r["precision"] == "fp32"}
    for r in rows:
        r["size_vs_fp32"] = r["size_mb"] / fp32[r["target"]] if r["target"] in fp32 else float("nan")
        r["latency_vs_torch"] = r["p50_ms"] / torch_ms
    args.out.write_text(json.dumps({"torch_fp32_ms": torch_ms, "calibration": calib.record(), "rungs": rows}, indent=2))
    print(f"torch eager fp32 {torch_ms:.0f} ms")
    for r in rows:
        print(f"{r['target']:9s} {r['precision']:13s} {r['size_mb']:8.1f} MB ({r['size_vs_fp32']:.0%})  "
              f"p50 {r['p50_ms']:7.0f} ms ({r['latency_vs_torch']:.2f}x torch)  |dlogit| {r['max_abs_logit']:.3g}  "
              f"masks {r['mask_agreement']:.3f}")


if __name__ == "__main__":
    main()
