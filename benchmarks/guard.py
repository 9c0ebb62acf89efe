"""The plausibility guard on the toy world (not a test): false alarms on genuine aligned faces, and how often it
catches crops misaligned on purpose (shifted, rotated, scaled, swapped landmarks). Prints one markdown table.

    python benchmarks/guard.py --fit toy:train:800 --test toy:test:400

The guard is fitted as `dfedge fit-probe` fits it (dfedge.train.probe.fit_guard) on the --fit faces. Each --test
face is a toy photo (the rendered crop) with its true landmarks; every variant re-aligns it with the landmarks
moved as named, and the torch detector indexes the region of each crop.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dfedge.data.sources import open_set
from dfedge.data.synthetic import toy_sample
from dfedge.device.align import align
from dfedge.device.verdict import check_region
from dfedge.models.detector import ALIGN_TEMPLATE, CROP_SIZE
from dfedge.models.factory import DetectorSpec, build_detector
from dfedge.device.host import cpu_isa, cpu_model
from dfedge.train import probe as probe_lib


def turned(points: np.ndarray, degrees: float = 0.0, scale: float = 1.0) -> np.ndarray:
    centre = points.mean(0)
    a = np.deg2rad(degrees)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (points - centre) @ rot.T + centre


VARIANTS = {
    "genuine (true landmarks)": lambda p: p,
    "shift x +16 px (half a token)": lambda p: p + [16, 0],
    "shift x +32 px": lambda p: p + [32, 0],
    "shift y +32 px": lambda p: p + [0, 32],
    "shift y -32 px": lambda p: p + [0, -32],
    "shift x, y +24 px": lambda p: p + [24, 24],
    "rotate 20°": lambda p: turned(p, 20),
    "rotate 40°": lambda p: turned(p, 40),
    "scale 0.75": lambda p: turned(p, scale=0.75),
    "scale 1.33": lambda p: turned(p, scale=1.33),
    "eyes and mouth swapped": lambda p: p[[3, 4, 2, 0, 1]],
    "mirrored (left, right swapped)": lambda p: p[[1, 0, 2, 4, 3]],
}


def masks(det, crops: list[np.ndarray]) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(crops), 16):
            x = torch.from_numpy(np.stack(crops[i : i + 16]).transpose(0, 3, 1, 2).astype(np.float32))
            out.append(det(x).token_mask.numpy())
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fit", default="toy:train:800")
    ap.add_argument("--test", default="toy:test:400")
    args = ap.parse_args()
    torch.set_num_threads(2)
    start = time.time()
    det = build_detector(DetectorSpec())
    feats = probe_lib.extract_features(det, open_set(args.fit), batch=16)
    guard = probe_lib.fit_guard(feats, args.fit)
    split, n = args.test.split(":")[1], int(args.test.split(":")[2])
    samples = [toy_sample(i, split) for i in range(n)]
    rows = []
    as_made = masks(det, [s.image for s in samples])
    variants = {"test crops as rendered (pose jitter kept)": as_made}
    for name, move in VARIANTS.items():
        crops = [align(s.image, move(s.face.landmarks.astype(np.float64)), ALIGN_TEMPLATE, CROP_SIZE)
                 for s in samples]
        variants[name] = masks(det, crops)
    for name, m in variants.items():
        status = [check_region(mask, guard)[0] for mask in m]
        none = status.count("no_region") / n
        odd = status.count("implausible_region") / n
        rows.append((name, none, odd, none + odd))
    print(f"guard fitted on {args.fit} ({guard['faces']} faces with a region): tokens {guard['tokens']}, row "
          f"{[round(v, 2) for v in guard['row']]}, col {[round(v, 2) for v in guard['col']]}; coverage "
          f"{guard['coverage']}, margin {guard['margin']}")
    print(f"{n} faces of {args.test}; {cpu_model()} ({', '.join(cpu_isa())}); {time.time() - start:.0f} s\n")
    print("| crops | no_region | implausible_region | flagged (not scored) |\n|---|---|---|---|")
    for name, none, odd, both in rows:
        print(f"| {name} | {none:.1%} | {odd:.1%} | {both:.1%} |")


if __name__ == "__main__":
    main()
