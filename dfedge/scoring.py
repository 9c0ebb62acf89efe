"""`dfedge score`: photos, videos, folders of them, or aligned crops -> one JSON-able record per face (photos), per
video, per crop, each with a status (device/verdict.STATUSES) and a probability only when the status is ok.

The detector is a `dfedge.runtimes.Pipeline`: the torch model with the kit's face detector, or a bundle. A file
that cannot be read is a record with status `unreadable` naming it; the other inputs are still scored.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.images import IMAGE_SUFFIXES, ImageError, read_crop
from .device.validation import same_threshold
from .data.media import FRAMES_PER_VIDEO, MediaError, Pass, media_kind, read_photo, sampler
from .distributed import RayEngine, Worker
from .device.faces import detectors
from .device.faces.mtcnn import MIN_FACE
from .device.image import MAX_PIXELS
from .device.verdict import Verdict
from .models.writing import atomic_write


@dataclass(frozen=True)
class ScoreOptions:
    aligned: bool = False  # the inputs are aligned crops (no face detection)
    faces: str = "all"  # all | largest: which faces of a photo get a record
    min_face: int = MIN_FACE  # smallest face side, in pixels, that is scored
    frames: int = FRAMES_PER_VIDEO  # frames sampled uniformly per video ...
    fps: float | None = None  # ... or at this rate
    track: str = "iou"  # iou | largest: how the face is followed across a video's frames
    per_frame: bool = False  # keep each sampled frame's verdict in the video record
    top: int = 5  # top-contributing tokens listed per face
    save_vis: Path | None = None  # per face: the photo with box and landmarks, the crop with mask and contributions
    max_pixels: int = MAX_PIXELS  # a photo, or a video's frames, that would decode to more is refused from its header
    temporal: bool = False  # a video's verdict from SDR's temporal head over windows of its frames (video bundles)
    stride: int | None = None  # frames between the temporal head's windows (default: its window)


def check(options: ScoreOptions, detector) -> None:
    """Settings that cannot work, as one line (ValueError) before anything is read."""
    if options.faces not in ("all", "largest") or options.track not in ("iou", "largest"):
        raise ValueError(f"--faces is all or largest, --track iou or largest (got {options.faces}, {options.track})")
    row = detectors()[(detector.manifest.get("front_end") or {}).get("detector", "mtcnn")]
    if options.min_face < row.smallest_face:
        raise ValueError(f"--min-face {options.min_face}: {row.name.upper()}'s smallest window is {row.smallest_face} px")
    if options.max_pixels < 1:
        raise ValueError(f"--max-pixels must be at least 1 (got {options.max_pixels})")
    if options.frames < 1 or (options.fps is not None and not 0 < options.fps < math.inf):  # NaN fails both
        raise ValueError(f"--frames must be at least 1 and --fps a positive number (got {options.frames}, {options.fps})")
    if options.top < 0:
        raise ValueError(f"--top must be at least 0 (got {options.top})")
    if options.temporal:
        detector.stream(options.stride)  # ValueError: no temporal head, or a stride outside 1..T
    if not options.aligned and detector.scorer.detector is None:
        raise ValueError(f"{detector.path}: this bundle has no face front end (made before bundles carried one): "
                         "export it again, or score aligned crops with --aligned")


def write_records(records: Iterator[dict], output: Path | None, inputs: list[Path]) -> None:
    """JSON lines as each input is scored: to stdout, or into `output` (a temporary file renamed at the end). An
    output that is one of the inputs is refused before anything is read."""
    if output is not None:
        if Path(output).resolve() in {Path(p).resolve() for p in [*inputs, *expand(inputs)]}:
            raise ValueError(f"{output}: is one of the inputs; choose another --output")

        def write(tmp: Path) -> None:
            with open(tmp, "w") as f:
                for record in records:
                    f.write(json.dumps(record) + "\n")

        atomic_write(output, write)
        return
    for record in records:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


def expand(paths: list[Path], aligned: bool = False) -> list[Path]:
    """Files as given; folders searched recursively for photos and videos (or, aligned, image crops), sorted."""
    out = []
    for path in map(Path, paths):
        if path.is_dir():
            wanted = IMAGE_SUFFIXES if aligned else ()
            out += sorted(p for p in path.rglob("*") if p.is_file()
                          and (p.suffix.lower() in wanted if aligned else media_kind(p) is not None))
        else:
            out.append(path)
    return out


def random_weights(manifest: dict) -> list[str]:
    """The parts of a detector that are seeded random weights (its manifest's `sources` without a SHA-256)."""
    if "random_weights" in manifest:
        return list(manifest["random_weights"])
    return [part for part, rec in (manifest.get("sources") or {}).items() if isinstance(rec, dict) and not rec.get("sha256")]


def score_paths(detector, paths: list[Path], options: ScoreOptions = ScoreOptions()) -> Iterator[dict]:
    """Records, in the order of `expand(paths)`; each says `random_weights` when any part of the model is random."""
    check(options, detector)
    if detector.scorer.detector is not None:
        detector.scorer.detector = detector.scorer.detector.with_min_face(options.min_face)
    random = random_weights(detector.manifest)
    for record in _records(detector, paths, options):
        yield {**record, "random_weights": random} if random else record


def records(engine, opener: tuple, detector, paths: list[Path], options: ScoreOptions) -> Iterator[dict]:
    """dfedge score's records: score_paths with `detector` in this process, or, on a RayEngine, score_paths_on."""
    if not isinstance(engine, RayEngine):
        return score_paths(detector, paths, options)
    check(options, detector)
    return score_paths_on(engine, opener, paths, options)


def score_paths_on(engine, opener: tuple, paths: list[Path], options: ScoreOptions = ScoreOptions(), progress=None) -> Iterator[dict]:
    """score_paths on a dfedge.distributed.RayEngine: each input file is a unit, scored by actors that each open the
    detector once (`opener`: open_detector's arguments); the records come back in the order of `expand(paths)`."""
    files = expand(paths, options.aligned)
    if not files:
        return iter(())
    cols = engine.map(len(files), RecordWorker, dict(paths=files, opener=opener, options=options),
                      ["records", [str(f) for f in files], repr(opener), repr(options)], progress)
    return (json.loads(r) for r in cols["record"])


class RecordWorker(Worker):
    """A Ray actor of score_paths_on: the detector opened once; per input file its records (a detector error is a
    `model_error` record naming the file: the other files are still scored)."""

    def __init__(self, paths, opener, options, units, size, cpus):
        super().__init__(units, size, cpus)
        self.paths, self.options, self.detector = paths, options, open_detector(*opener)

    def rows(self, units):
        out = []
        for u in units:
            try:
                records = list(score_paths(self.detector, [self.paths[u]], self.options))
            except Exception as e:  # noqa: BLE001 - one file's failure is its record, not the end of the run
                records = [failed(self.paths[u], media_kind(self.paths[u]) or "photo", "model_error", str(e))]
            out += [{"unit": u, "item": j, "record": json.dumps(r)} for j, r in enumerate(records)]
        return out


def _records(detector, paths: list[Path], options: ScoreOptions) -> Iterator[dict]:
    for path in expand(paths, options.aligned):
        kind = "crop" if options.aligned else (media_kind(path) or "photo")
        try:
            if path.exists() and not path.is_file():  # a FIFO or a device would block the decoder, or never end
                raise MediaError("unreadable", "not a regular file (a FIFO, a device or a socket)")
            if kind == "crop":
                yield _crop(detector, path, options)
            elif kind == "video":
                yield _video(detector, path, options)
            else:
                yield from _photo(detector, path, options)
        except (MediaError, ImageError) as e:
            yield failed(path, kind, "unreadable", e.detail if isinstance(e, MediaError) else _strip(e, path))
        except Exception as e:  # noqa: BLE001 - one input's failure is its own record, never the batch's end
            yield failed(path, kind, "model_error", f"not scored ({type(e).__name__}"
                         + (f": {_strip(e, path).splitlines()[0]})" if str(e).strip() else ")"))


def failed(path: Path, kind: str, status: str, detail: str) -> dict:
    """The record of an input that gave no verdict: `unreadable` (the file) or `model_error` (what scored it)."""
    return {"file": str(path), "kind": kind, "status": status, "reason": f"{path}: {detail}",
            "probability": None, "logit": None, "decision": None}


def _strip(e: Exception, path: Path) -> str:
    text = str(e)
    return text[len(f"{path}: "):] if text.startswith(f"{path}: ") else text


def _crop(detector, path: Path, options: ScoreOptions) -> dict:
    conversions: list[str] = []
    verdict = detector.scorer.score_crop(read_crop(path, detector.crop_size, conversions))
    return {"file": str(path), "kind": "crop", **verdict.record(options.top), **_said(conversions)}


def _said(conversions) -> dict:
    """A record's `conversions`: what reading the image did besides decoding it (present only when anything)."""
    return {"conversions": list(conversions)} if conversions else {}


def _photo(detector, path: Path, options: ScoreOptions) -> Iterator[dict]:
    image, (width, height), conversions = read_photo(path, max_pixels=options.max_pixels)
    verdicts = detector.score_image(image, faces=options.faces)
    kx, ky = width / image.shape[1], height / image.shape[0]  # the decoded copy -> the photo's own pixels
    for i, verdict in enumerate(verdicts):
        if options.save_vis is not None and verdict.face is not None:
            save_vis(options.save_vis / f"{path.stem}-face{i}.png", image, verdict, path.name)
        if verdict.face is not None:
            verdict.face = verdict.face.scaled(kx, ky)
        yield {"file": str(path), "kind": "photo", "size": [width, height], "decoded_size": [image.shape[1], image.shape[0]],
               "face_index": i, "faces": sum(v.face is not None for v in verdicts), **verdict.record(options.top),
               **_said(conversions)}


VIDEO_SIDE = 1920  # sampled frames are kept at most this long, one at a time (landmarks in these pixels)


def _video(detector, path: Path, options: ScoreOptions) -> dict:
    frames = Pass(path, sampler(options.frames, options.fps), VIDEO_SIDE, options.max_pixels)
    record = detector.score_video(frames, options.track, options.temporal, options.stride)
    if not frames.decoded:
        raise MediaError("no frames", f"no frame decodes{f' ({frames.error})' if frames.error else ''}")
    if not options.per_frame:
        record.pop("per_frame")
    return {"file": str(path), "kind": "video", "frames_decoded": frames.decoded, "decode_error": frames.error, **record,
            **_said(frames.conversions)}


def save_vis(path: Path, image: np.ndarray, verdict: Verdict, title: str) -> Path:
    """The photo with the face's box and landmarks, and the aligned crop with the token mask and each region
    token's contribution to the logit over it (red towards fake, blue towards real), with a colour key."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 5), dpi=100)
    left.imshow(image)
    x1, y1, x2, y2 = verdict.face.box
    left.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", linewidth=2))
    left.plot(*verdict.face.landmarks.T, "o", color="yellow", markersize=4)
    left.set_title(f"{title}: face {verdict.face.score:.3f}", fontsize=9)
    right.imshow(verdict.crop)
    crop = verdict.crop.shape[0]
    contributions = np.where(verdict.token_mask, verdict.contributions, np.nan)
    lim = float(np.nanmax(np.abs(contributions))) if verdict.region_tokens else 1.0
    heat = right.imshow(contributions, cmap="bwr", vmin=-lim, vmax=lim, alpha=0.6, extent=(0, crop, crop, 0),
                        interpolation="nearest")
    fig.colorbar(heat, ax=right, fraction=0.046, label="token contribution to the logit (red: towards fake)")
    score = f"p(fake) {verdict.probability:.3f}, {verdict.decision}" if verdict.status == "ok" else verdict.status
    right.set_title(f"aligned crop: {verdict.region_tokens} region tokens; {score}", fontsize=9)
    for ax in (left, right):
        ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda t: fig.savefig(t, format="png"))
    plt.close(fig)
    return path


def work(engine, dataset) -> int:
    """What an engine's progress counts to: samples in one process, units (samples or videos) on Ray."""
    return dataset.units() if isinstance(engine, RayEngine) else len(dataset)


def problems_of(scores, dataset) -> list[dict]:
    """The media problems met: the engine's (Ray: found by its workers), else the set's own (Celeb-DF's)."""
    import dataclasses

    found = scores.header.pop("problems", None)
    return found if found is not None else [dataclasses.asdict(p) for p in getattr(dataset, "problems", [])]


def placement(engine, device: str) -> tuple[str, str, str]:
    """(where this process runs the model, what the workers' recipe asks for, the progress bar's word for where).
    A RayEngine places its actors itself (auto: the cluster's GPUs when it has some), so the device is not resolved
    here, where there may be no GPU."""
    from .runtimes.reference import resolve_device

    if isinstance(engine, RayEngine):
        return "cpu", device, "ray actors"
    dev = resolve_device(device)
    return dev, dev, dev


def device_facts(engine, dev: str) -> dict:
    """Where the reference ran, for the scores header: this process's torch, or the Ray actors' device."""
    from .runtimes.reference import torch_facts

    if isinstance(engine, RayEngine):
        return {"device": engine.last.get("device"), "engine": "ray", "workers": engine.last.get("workers")}
    return torch_facts(dev)


def reference_scores(spec, data: str, device: str, batch: int, progress, engine=None):
    """dfedge reference: the FP32 torch detector of `spec` over the labelled set `data` on `device` (auto, cpu,
    cuda) -> Scores whose header names the model, its identity, the device and the media problems met.
    progress(count, device) -> a context manager giving advance(). engine: eval.scores.score_set (default) or a
    dfedge.distributed.RayEngine, whose workers build the same model from `spec`."""
    import dataclasses

    from .data.sources import open_set
    from .eval.scores import score_set
    from .eval.validate import decisions
    from .models.factory import build_detector, identity
    from .runtimes.recipe import Recipe
    from .runtimes.reference import torch_runner

    engine = engine or score_set
    dataset = open_set(data, spec.region)
    dev, actors, where = placement(engine, device)
    det = build_detector(spec)
    with progress(work(engine, dataset), where) as advance:
        scores = engine(torch_runner(det, dev), dataset, batch=batch, progress=advance, recipe=Recipe("torch", spec=spec, device=actors))
    problems = problems_of(scores, dataset)
    scores.header.update(model="torch fp32", detector=dataclasses.asdict(spec), identity=identity(spec), device=device_facts(engine, dev),
                         data=data, threshold=float(det.probe.info.threshold), decisions=decisions(det), problems=problems)
    return scores


def video_reference(spec, data: str, device: str, temporal: str | Path | None, progress, engine=None):
    """dfedge reference --temporal: the FP32 torch frame encoder over a video set's frames (toyvideo:, celebdf:, a
    list with video ids) -> (video-level Scores of the temporal head, of the frame mean), headers as reference_scores'.
    engine: as reference_scores' (the frames fan out; the temporal head runs here on their features)."""
    import dataclasses

    from .data.sources import open_set
    from .eval.scores import score_set
    from .eval.video import frame_mean_scores, frame_scores, temporal_scores
    from .models.factory import build_detector, identity
    from .models.temporal import temporal_head
    from .runtimes.recipe import Recipe
    from .runtimes.reference import torch_runner

    engine = engine or score_set
    dataset = open_set(data, spec.region)
    dev, actors, where = placement(engine, device)
    det = build_detector(spec)
    head = temporal_head(temporal, spec.preset, det.dinov3.cfg.width)
    with progress(work(engine, dataset), where) as advance:
        frames, features = frame_scores(torch_runner(det, dev), dataset, advance, engine, Recipe("torch", spec=spec, device=actors))
    problems = problems_of(frames, dataset)
    header = dict(model="torch fp32", detector=dataclasses.asdict(spec), identity=identity(spec), device=device_facts(engine, dev),
                  data=data, problems=problems, temporal=head.sources)
    temporal_run = torch_runner(head, dev)
    scores = temporal_scores(frames, features, temporal_run, head.cfg.frames, head.info.min_valid)
    scores.header.update(header, threshold=float(head.info.threshold))
    mean = frame_mean_scores(frames)
    mean.header.update(header, threshold=float(det.probe.info.threshold))
    return scores, mean


def reference_data(ref):
    """The reference's labelled set, if it can still be opened here (for montage crops and re-scoring), else None."""
    from .data.sources import open_set

    try:
        data = ref.header.get("data")
        return open_set(data, ref.header.get("detector", {}).get("region", "mouth")) if data else None
    except ValueError:
        return None


def artifact_scores(artifact: Path, ref, names: tuple[str, str], dataset, threads: int, progress, save: Path,
                    engine=None):
    """dfedge validate's artifact: a scores file as it is, or a bundle scored with its runtime on the reference's set
    (at video level, frame encoder then temporal graph, when the reference is a video-level one) -> (Scores, the
    bundle's runner or None); a bundle's scores are saved to `save`. Refused (ValueError) when the two were made by
    different models. engine: as reference_scores' (Ray workers each load the bundle, verified whole, once)."""
    from .eval import validate as v
    from .eval.scores import load_scores, save_scores, score_set
    from .eval.video import frame_scores, temporal_scores
    from .runtimes import load
    from .runtimes.recipe import Recipe

    engine = engine or score_set

    if not artifact.is_dir():
        art = load_scores(artifact)
        v.check_same_model(ref.header.get("identity"), art.header.get("identity"), names)
        return art, None
    if dataset is None:
        raise ValueError(f"{artifact}: the reference's data cannot be opened here, so the bundle cannot be scored on it")
    det = load(artifact, threads, interpreter=True)  # verified whole first
    manifest = det.manifest
    v.check_same_model(ref.header.get("identity"), v.manifest_identity(manifest), names)
    video = ref.header.get("level") == "video" and ref.header.get("aggregation") == "temporal"
    if video and det.temporal is None:
        raise ValueError(f"{artifact}: {names[0]} holds video-level temporal scores and this bundle has no temporal head")
    threshold = manifest["temporal"]["threshold_logit"] if video else manifest["probe"]["threshold_logit"]
    if "threshold" in ref.header and not same_threshold(threshold, ref.threshold):
        raise ValueError(f"{artifact}: decides at logit >= {float(threshold):.6g}, {names[0]} at >= {ref.threshold:.6g} "
                         "(its probe's): a bundle whose decision threshold was edited is not the model validated")
    v.check_same_decisions(ref.header.get("decisions"), manifest, artifact, names[0])
    if video and ref.header.get("temporal", {}).get("sha256") != manifest["temporal"].get("sources", {}).get("sha256"):
        raise ValueError(f"{names[0]} was scored with another temporal head than {artifact}'s (SHA-256 "
                         f"{ref.header.get('temporal', {}).get('sha256')} vs {manifest['temporal'].get('sources', {}).get('sha256')})")
    recipe = Recipe("bundle", path=str(artifact), threads=threads)
    with progress(work(engine, dataset), f"{manifest['target']}-{manifest['precision']}") as advance:
        if video:
            frames, features = frame_scores(det.run, dataset, advance, engine, recipe)
            t = manifest["temporal"]
            art = temporal_scores(frames, features, det.temporal, int(t["frames"]), int(t.get("min_valid", 1)))
        else:
            art = engine(det.run, dataset, progress=advance, recipe=recipe)
        art.header.pop("problems", None)
    art.header.update(model=f"{manifest['target']}-{manifest['precision']} bundle {artifact}", data=dataset.description,
                      threshold=float(threshold), identity=v.manifest_identity(manifest))
    save_scores(save, art)
    return art, det.run


def open_detector(bundle: Path | None, spec=None, temporal: Path | bool | None = None):
    """dfedge score's detector: the bundle (its temporal head with it), or the torch model of `spec` with the temporal
    head file `temporal` (True: the preset's shipped one; None/False: none)."""
    from .models.factory import build_detector
    from .models.temporal import temporal_head
    from .runtimes import from_torch, load

    if bundle:
        return load(bundle, interpreter=True)
    model = build_detector(spec)
    head = temporal_head(temporal if isinstance(temporal, Path) else None, spec.preset, model.dinov3.cfg.width) if temporal else None
    return from_torch(model, temporal=head)


def auc(scores) -> float:
    """AUC of the scored samples of a Scores (NaN with one class)."""
    from .eval.metrics import binary_metrics

    return binary_metrics(scores.labels[scores.scored], scores.logits[scores.scored], 0.0).auc
