"""Photo -> verdict on this host, split into decode, detect, align and score, and the face front end's share of the
whole at toy and at full model size (not a test). Prints one markdown table.

    python benchmarks/front_end.py --runs 3

Photos: a toy face in a 640x480 picture, and the same picture upscaled to 12 MP and 48 MP JPEGs (decoded at a reduced
size, searched in a copy of at most 1600 px). The front end is the kit's: the device package (dfedge/device/) with the torch nets, the
code every bundle runs with its own runtime's nets. The model is torch FP32 eager, toy and full size (ViT-L/16 +
FaRL-B, seeded random weights: the time is the architecture's).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from dfedge.data.media import read_photo
from dfedge.data.synthetic import toy_sample
from dfedge.device import align as alignment
from dfedge.device.faces.mtcnn import detect_faces
from dfedge.models.detector import ALIGN_TEMPLATE, CROP_SIZE
from dfedge.models.factory import DetectorSpec, build_detector
from dfedge.models.mtcnn import TorchNets, load_mtcnn
from dfedge.runtimes.reference import torch_runner
from dfedge.device.host import cpu_isa, cpu_model


def median_ms(fn, runs: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), out


def photos(folder: Path) -> dict[str, Path]:
    sample = toy_sample(7, "test")
    image = cv2.GaussianBlur(np.random.default_rng(0).uniform(60, 200, (480, 640, 3)).astype(np.uint8), (0, 0), 3)
    image[90:390, 170:470] = cv2.resize(sample.image, (300, 300), interpolation=cv2.INTER_AREA)
    out = {}
    for name, size in (("640x480", (640, 480)), ("12 MP", (4000, 3000)), ("48 MP", (8000, 6000))):
        path = folder / f"{name.replace(' ', '')}.jpg"
        Image.fromarray(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)).save(path, quality=92)
        out[name] = path
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    nets = TorchNets(load_mtcnn())
    models = {}
    for preset in ("toy", "full"):
        run = torch_runner(build_detector(DetectorSpec(preset=preset)))
        crop = np.zeros((1, 3, CROP_SIZE, CROP_SIZE), np.float32)
        run(crop)
        models[preset] = median_ms(lambda run=run: run(crop), args.runs)[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in photos(Path(tmp)).items():
            decode, photo = median_ms(lambda path=path: read_photo(path), args.runs)
            image = photo.image
            detect, faces = median_ms(lambda image=image: detect_faces(image, nets.pnet, nets.rnet, nets.onet), args.runs)
            align, _ = median_ms(lambda: [alignment.align(image, f.landmarks, ALIGN_TEMPLATE, CROP_SIZE) for f in faces], args.runs)
            front = decode + detect + align
            rows.append((name, len(faces), decode, detect, align,
                         *(f"{m:.0f} ({front / (front + m):.1%})" for m in models.values())))
    print(f"{cpu_model()} ({', '.join(cpu_isa())}), {args.threads} threads, median of {args.runs}; front end share = "
          "(decode + detect + align) / (that + score)\n")
    print("| photo | faces | decode ms | detect ms | align ms | score ms, toy (front end share) | score ms, full size "
          "(front end share) |\n|---|---|---|---|---|---|---|")
    for name, n, decode, detect, align, toy, full in rows:
        print(f"| {name} | {n} | {decode:.0f} | {detect:.0f} | {align:.0f} | {toy} | {full} |")


if __name__ == "__main__":
    main()
