"""Timing a bundle on this device: the model on a fixed crop, a photo -> verdict split into decode, detect, align
and score, and a video streamed frame by frame; one JSON result (schema dfedge-bench/1) per run."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .align import align
from .bundle import open_faces, open_runner, open_temporal, placement, runtime_options, scorer, stream
from .errors import BundleError, RuntimeUnavailable
from .files import VALIDATION_FILE
from .host import device_facts, peak_rss_mb
from .image import read_image as decode_image
from .manifest import verify
from .scorer import follow
from .validation import over_budget, to_input, validate
from .verdict import Verdict, no_face, video_record
from .video import read_video

RESULT_SCHEMA = "dfedge-bench/1"


def demo_crop(size: int, seed: int = 0) -> np.ndarray:
    """A fixed uint8 RGB crop [size, size, 3]: the graph is static, so latency does not depend on its content."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def time_runner(run, x: np.ndarray, warmup: int, runs: int) -> dict:
    """Warm-up, then `runs` timed single-crop calls: latency percentiles (ms) and throughput."""
    start = time.perf_counter()
    for _ in range(warmup):
        run(x)
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - start) * 1e3)
    t = np.asarray(times)
    return {"warmup_runs": warmup, "warmup_s": warmup_s, "runs": runs,
            "latency_ms": {"p50": float(np.percentile(t, 50)), "p90": float(np.percentile(t, 90)),
                           "p99": float(np.percentile(t, 99)), "mean": float(t.mean()), "min": float(t.min())},
            "fps": float(1e3 / t.mean())}


def bundle_bytes(manifest: dict) -> int:
    """A bundle's size: the bytes of every file its manifest lists but the validation pack (test data an app need not
    ship: 32 toy crops are 17 MB, four times a toy INT8 model)."""
    return int(sum(f["bytes"] for name, f in manifest["files"].items() if name != VALIDATION_FILE))


def read_image(path: str | Path) -> np.ndarray:
    """uint8 RGB [H, W, 3]: a .npy array as is; any other file as the kit reads photos (frontend.read_image: Pillow,
    EXIF orientation, at most 4096 px long)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            image = np.load(path, allow_pickle=False)
        else:
            image, _, _ = decode_image(path)
    except ImportError:
        raise BundleError(f"{path}: reading this format needs Pillow (pip install pillow); a .npy RGB array does "
                          "not") from None
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise BundleError(f"{path}: expected an RGB image uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
    return image


def time_photo(score, path: Path, runs: int) -> dict:
    """A photo through the bundle: median ms of decode, detect, align and score (all faces), and the verdicts."""
    times: dict[str, list[float]] = {"decode": [], "detect": [], "align": [], "score": []}
    for _ in range(runs):
        start = time.perf_counter()
        image = read_image(path)
        times["decode"].append(time.perf_counter() - start)
        start = time.perf_counter()
        faces = score.faces(image)
        times["detect"].append(time.perf_counter() - start)
        start = time.perf_counter()
        crops = [align(image, f.landmarks, score.template, score.crop_size) for f in faces]
        times["align"].append(time.perf_counter() - start)
        start = time.perf_counter()
        verdicts = [score.score_crop(c) for c in crops]
        times["score"].append(time.perf_counter() - start)
    for face, verdict in zip(faces, verdicts):
        verdict.face = face
    records = [v.record() for v in verdicts] or [no_face(score.min_face).record()]
    return {"image": path.name, "size": [image.shape[1], image.shape[0]], "faces": len(faces), "runs": runs,
            **{f"{k}_ms": float(np.median(v)) * 1e3 for k, v in times.items()}, "verdicts": records}


def time_video(score, flow, path: Path, max_frames: int | None = None) -> dict:
    """A video through the bundle as a camera would feed it, one frame at a time: decode, detect (following one
    face), align, the frame encoder, and the temporal head on every window `flow` (a frontend.Stream) closes; the
    median ms of each per frame and per window, the windows' verdicts and the video's."""
    steps = ("decode", "detect", "align", "encode")
    times: dict[str, list[float]] = {k: [] for k in steps}
    records, windows, last, frames = [], [], None, read_video(path)
    while max_frames is None or len(records) < max_frames:
        start = time.perf_counter()
        item = next(frames, None)
        if item is None:
            break
        index, image = item
        t1 = time.perf_counter()
        face = follow(score.faces(image), last, "iou")
        t2 = time.perf_counter()
        crop = align(image, face.landmarks, score.template, score.crop_size) if face else None
        t3 = time.perf_counter()
        verdict = score.score_crop(crop) if face else Verdict("no_face", "no face followed in this frame")
        verdict.face, last = face, face or last
        t4 = time.perf_counter()
        for k, (a, b) in zip(steps, ((start, t1), (t1, t2), (t2, t3), (t3, t4))):
            times[k].append(b - a)
        windows += flow.push(index, verdict)
        records.append((index, verdict.kept()))
    if not records:
        raise BundleError(f"{path}: no frame decodes")
    windows += flow.flush()
    video = video_record(records, score.threshold, windows)
    video.pop("per_frame")
    per_frame = {f"{k}_ms": float(np.median(v)) * 1e3 for k, v in times.items()}
    return {"video": path.name, "frames": len(records), "window": flow.frames, "stride": flow.stride,
            "per_frame_ms": dict(per_frame, total_ms=sum(per_frame.values())),
            "per_window_ms": float(np.median(flow.window_ms)) if flow.window_ms else None, **video}


def bench(bundle: Path, runs: int, warmup: int, threads: int, device: str, label: str | None,
          media: dict | None = None, also: tuple[str, ...] = ()) -> dict:
    """Model latency on a fixed crop; `media` "image": a photo -> verdict split into decode, detect, align, score;
    "video": (clip, stride), the clip streamed through the frame encoder and the temporal head; `also` "validate":
    accuracy on this device from the bundle's validation pack (`validate`); "placement": where its ops run here."""
    image, video = (media or {}).get("image"), (media or {}).get("video")
    start = time.perf_counter()
    manifest = verify(bundle)
    target = manifest["target"]
    result = {"schema": RESULT_SCHEMA, "bundle": bundle.resolve().name, "name": manifest.get("name"),
              "target": target, "precision": manifest.get("precision"),
              "region_index": manifest.get("export_options", {}).get("region_index", "exact"),
              "size_mb": bundle_bytes(manifest) / 1e6, "threads": threads or os.cpu_count(), "device": device,
              "facts": device_facts(target, label), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        run = open_runner(bundle, target, threads, device, runtime_options(manifest))
    except RuntimeUnavailable as e:
        return dict(result, status="unavailable", reason=str(e))
    result["load_s"] = time.perf_counter() - start
    x = to_input(demo_crop(int(manifest["alignment"]["crop_size"])))
    result.update(time_runner(run, x, warmup, runs))
    if "placement" in also:  # where the ops run on this device, as its runtime reports it (None: fixed at conversion, or not observable)
        result["placement"] = placement(bundle, target, runtime_options(manifest), device) or manifest.get("placement")
    if "validate" in also:
        checked = validate(run, float(manifest["probe"]["threshold_logit"]), bundle)
        reasons = over_budget(checked, manifest)
        result["validation"] = dict(checked, host=manifest.get("validation_pack", {}).get("host"), passed=not reasons,
                                    reasons=reasons)
    if image is not None:
        result["photo"] = time_photo(scorer(run, manifest, open_faces(bundle, manifest, threads, device)), image, runs)
        result["photo"]["random_weights"] = manifest.get("random_weights", [])  # verdicts of a random model say so
    if video is not None:
        temporal = open_temporal(bundle, manifest, threads, device)
        if temporal is None:
            raise BundleError(f"{bundle}: this bundle has no temporal head (build it with --temporal) to score a video")
        flow = stream(temporal, manifest, video[1])
        result["video"] = time_video(scorer(run, manifest, open_faces(bundle, manifest, threads, device)), flow, video[0])
        result["video"]["random_weights"] = manifest.get("random_weights", [])
    return dict(result, status="ok", peak_rss_mb=peak_rss_mb())
