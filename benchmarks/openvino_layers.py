"""Where OpenVINO FP32 spends its time at full size: the kit's fp32 IR of the fused graph (seeded random weights),
compiled with the bundle's runtime options plus PERF_COUNT, one profiled inference after a warm-up, OpenVINO's own
per-node times summed by layer type and kernel (exec type). A script, not a test:

    python benchmarks/openvino_layers.py --region-index exact --threads 2 --out /tmp/openvino_layers.json

Prints the top (layer type, kernel) pairs with their share of the time. The host's CPU and ISA are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--region-index", default="exact")
    ap.add_argument("--preset", default="full")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hint", default="f32", help="INFERENCE_PRECISION_HINT (the bundle's: f32)")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import openvino as ov
    import torch

    from dfedge.data.sources import ToySet
    from dfedge.models.factory import DetectorSpec, build_detector
    from dfedge.device.host import cpu_isa, cpu_model

    torch.set_num_threads(args.threads)
    det = build_detector(DetectorSpec(preset=args.preset, region_index=args.region_index)).eval()
    crop = ToySet("val", 1)[0].image.transpose(2, 0, 1)[None].astype(np.float32)
    start = time.perf_counter()
    model = ov.convert_model(det, example_input=torch.from_numpy(crop))
    convert_s = time.perf_counter() - start
    del det
    path = Path(tempfile.mkdtemp(prefix="ov-layers-")) / "detector.xml"
    ov.save_model(model, path, compress_to_fp16=False)
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": args.hint, "PERF_COUNT": True,
                                                          "INFERENCE_NUM_THREADS": args.threads, "NUM_STREAMS": 1})
    request = compiled.create_infer_request()
    request.infer({0: crop})  # warm-up
    start = time.perf_counter()
    request.infer({0: crop})
    wall = time.perf_counter() - start
    by_kernel: dict[tuple[str, str], float] = defaultdict(float)
    for info in request.get_profiling_info():
        by_kernel[(info.node_type, info.exec_type)] += info.real_time.total_seconds()
    total = sum(by_kernel.values())
    rows = [{"layer": k[0], "kernel": k[1], "s": v, "share": v / total} for k, v in sorted(by_kernel.items(), key=lambda kv: -kv[1])]
    for r in rows[: args.top]:
        print(f"{r['layer']:22s} {r['kernel']:34s} {r['s']:7.3f} s  {100 * r['share']:5.1f} %")
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "cpu": cpu_model(), "isa": cpu_isa(),
              "threads": args.threads, "loadavg": os.getloadavg(), "openvino": ov.__version__, "convert_s": convert_s,
              "profiled_wall_s": wall, "profiled_sum_s": total, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print(f"profiled run {wall:.2f} s (sum of node times {total:.2f} s); host {result['cpu']}; ISA {', '.join(result['isa'])}; "
          f"{args.threads} threads; load average {result['loadavg'][0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
