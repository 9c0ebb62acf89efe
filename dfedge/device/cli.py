"""The bundle's command line (`python bench.py ...` inside a bundle): time it on this device, score a photo or a video,
validate it on its validation pack, record where its ops run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .timing import bench
from .errors import BundleError
from .files import bundle_around, outside_bundles, write_json
from .host import capped, cpus

def main(argv: list[str] | None = None, home: Path | None = None) -> int:
    """`home`: the bundle the entry script belongs to (the default --bundle)."""
    ap = argparse.ArgumentParser(description="Time this dfedge bundle on this device (numpy + its runtime only).")
    ap.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the one this entry script is in)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="0 = the runtime's default (all cores)")
    ap.add_argument("--device", default="CPU", help="OpenVINO device name: CPU, GPU, NPU, AUTO")
    ap.add_argument("--label", default=None, help="device name in merged reports (default: host and CPU model)")
    ap.add_argument("--out", type=Path, default=None, help="result JSON (default: bench-<bundle>.json here; beside the bundle when run inside it; never inside a bundle)")
    ap.add_argument("--image", type=Path, default=None,
                    help="also score this photo (.npy RGB array, or JPEG/PNG/... with Pillow): verdicts and the time of "
                         "decode, detect, align and score")
    ap.add_argument("--video", type=Path, default=None,
                    help="also stream this video (mp4/mov/webm with PyAV or OpenCV, or a .npy [T, H, W, 3] RGB array) through "
                         "the bundle frame by frame, as a camera would: the temporal head scores every window (video bundles)")
    ap.add_argument("--stride", type=int, default=None,
                    help="with --video: frames between window scores (default: the window, one score per T frames; 1: sliding)")
    ap.add_argument("--validate", action="store_true",
                    help="also score the bundle's validation pack on this device: ΔAUC, flip rate and token-mask agreement "
                         "against the torch FP32 reference; exit 1 when it fails the bundle's budgets (its gate's) or decides at another threshold than the reference")
    ap.add_argument("--placement", action="store_true",
                    help="also record where each op runs on this device and in which precision, as the runtime reports it")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.threads < 0:
        ap.error("--runs must be >= 1, --warmup and --threads >= 0")
    args.threads = capped("--threads", args.threads, cpus(), "the CPUs of this device")
    try:
        if (args.bundle or home) is None:
            ap.error("--bundle is needed")
        default = Path(f"bench-{Path(args.bundle or home).resolve().name}.json")  # here, or beside the bundle run inside
        out = outside_bundles(args.out or ((bundle_around(".").parent / default) if bundle_around(".") else default))
        result = bench(args.bundle or home, args.runs, args.warmup, args.threads, args.device, args.label,
                       {"image": args.image, "video": (args.video, args.stride) if args.video else None},
                       tuple(k for k in ("validate", "placement") if getattr(args, k)))
    except (BundleError, ValueError) as e:  # an unusable bundle or photo (e.g. a bundle without a face front end)
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        write_json(out, result)
    except OSError as e:
        print(f"error: {out}: {e.strerror or e}", file=sys.stderr)
        return 2
    if result["status"] != "ok":
        print(f"not run: {result['reason']}", file=sys.stderr)
        return 3
    lat = result["latency_ms"]
    print(f"{result['bundle']}: {result['target']} {result['precision']}  p50 {lat['p50']:.2f} ms  p90 {lat['p90']:.2f} ms  "
          f"{result['fps']:.1f} FPS  load {result['load_s']:.2f} s  -> {out}")
    if "validation" in result:
        v = result["validation"]
        print(f"validation pack ({v['crops']} crops) on this device: AUC {v['auc']:.4f} (torch FP32 {v['reference_auc']:.4f}, "
              f"Δ {v['delta_auc'] * 100:+.2f} pp), flips {v['flip_rate']:.2%}, token masks {v['mask_agreement']:.2%}"
              + (f"; the kit's own host: Δ {v['host']['delta_auc'] * 100:+.2f} pp" if v.get("host") else ""))
        if not v["passed"]:
            print(f"validation FAILED on this device: {'; '.join(v['reasons'])}", file=sys.stderr)
    if "photo" in result:
        photo = result["photo"]
        print(f"{photo['image']}: {photo['faces']} face(s); decode {photo['decode_ms']:.1f} ms, detect "
              f"{photo['detect_ms']:.1f} ms, align {photo['align_ms']:.1f} ms, score {photo['score_ms']:.1f} ms")
        if photo["random_weights"]:
            print(f"warning: seeded random {', '.join(photo['random_weights'])}: not a detector's verdicts", file=sys.stderr)
        for verdict in photo["verdicts"]:
            print(json.dumps(verdict))
    if "video" in result:
        v = result["video"]
        print(f"{v['video']}: {v['frames']} frames, {len(v['windows'])} window(s) of {v['window']}; per frame: decode "
              f"{v['per_frame_ms']['decode_ms']:.1f} ms, detect {v['per_frame_ms']['detect_ms']:.1f} ms, align "
              f"{v['per_frame_ms']['align_ms']:.1f} ms, encode {v['per_frame_ms']['encode_ms']:.1f} ms; per window: "
              + (f"{v['per_window_ms']:.2f} ms" if v["per_window_ms"] is not None else "none scored"))
        if v["random_weights"]:
            print(f"warning: seeded random {', '.join(v['random_weights'])}: not a detector's verdicts", file=sys.stderr)
        for w in v["windows"]:
            print(json.dumps(w))
        print(json.dumps({k: v[k] for k in ("status", "reason", "probability", "logit", "decision", "frame_mean")}))
    return 1 if not result.get("validation", {}).get("passed", True) else 0
