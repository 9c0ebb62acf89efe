"""A bundle per job: `dist/<name>/<folder>/` with the model file(s), manifest.json, USAGE.md, the device package
(dfedge_device/) and its entry script bench.py. Written
into a temporary folder beside the final one and renamed into place only after conversion, parity and the gate
succeed, so a failed or refused bundle leaves nothing behind."""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import shutil
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import torch

from .._version import __version__
from ..data.sources import toy_photos
from ..eval.gate import GateError, Parity, ParityError, check_front_end_parity, check_parity, parity_message, reference_outputs
from ..device import files as device_files
from ..device.align import LANDMARKS
from ..device.bundle import placement, placement_unobserved
from ..device.faces.mtcnn import ROW as MTCNN_ROW
from ..device.host import device_facts
from ..device.schema import BUNDLE_SCHEMA, MANIFEST_SCHEMA, schema_errors
from ..device.validation import validate
from ..models import mtcnn
from ..models.checkpoint import sha256_file
from ..models.writing import temporary, track, uninterrupted
from ..device.graphs import OUTPUTS, TEMPORAL_OUTPUTS
from ..models.detector import ALIGN_TEMPLATE
from ..models.heads import head
from ..models.region import region_classes
from ..models.temporal import Graph
from ..models.temporal import pack as pack_frames
from ..runtimes import open_face_nets, open_runtime, open_temporal, temporal_section, torch_runner
from ..runtimes.recipe import Recipe
from .job import Job

MANIFEST = device_files.MANIFEST
DEVICE_PACKAGE = Path(device_files.__file__).resolve().parent  # dfedge/device/: copied whole into every bundle

OUTPUT_MEANING = {
    "logit": "probe logit; positive = fake",
    "probability": "sigmoid(logit) = P(fake)",
    "token_mask": "1 where the token belongs to the region (parser-indexed), else 0",
    "region_tokens": "number of region tokens; 0 = region not found, do not use the score",
    "contributions": "w.x_t/|R| per region token; sum + probe bias = logit",
    "streams": "each stream's (calibrated) probability; one stream, equal to probability, but for the ensemble head",
    "feature": "mean of the region's DINOv3 tokens (zeros without region tokens): the frame feature a video's temporal head reads",
}
# what changes for the heads whose outputs read differently (models/heads.py)
HEAD_MEANING = {
    "topk": {"token_mask": "1 where the token won a Top-K slot of some salience channel (inside the region), else 0",
             "region_tokens": "number of selected tokens; 0 = region not found, do not use the score",
             "contributions": "sum of w[c,k] s_c(t) over the Top-K slots token t won; sum + probe bias = logit"},
    "ensemble": {"logit": "log-odds of the unrounded weighted mean of the calibrated stream probabilities (ranks; the threshold applies to it)",
                 "probability": "the discretized weighted vote of the streams (NTIRE 2026 rule), in steps of the vote step",
                 "token_mask": "1 where the token belongs to any regional stream's region, else 0",
                 "region_tokens": "number of tokens in the regional streams' regions; 0 = no face parsed, do not use the score",
                 "contributions": "all zero: a vote is not a sum over tokens (see streams)"},
}


def package_version(name: str) -> str | None:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return None


def file_hashes(root: Path) -> dict[str, dict]:
    """sha256 and size of every file under `root` (a .mlpackage is a folder: each of its files is listed)."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel != MANIFEST:
            out[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return out


FACE_DETECTOR = MTCNN_ROW  # the face detector every bundle carries (its torch nets: models/mtcnn.py)


def head_record(probe) -> dict | None:
    """What a bundle's manifest records of a head beyond one linear layer: its config (topk: channels, K;
    ensemble: streams, vote weights, step, calibration kind) and, for the ensemble, each stream's calibration."""
    cfg = probe.info.head_config
    if cfg is None or not hasattr(probe, "calib_scale"):
        return cfg
    return {**cfg, "calibration_parameters": {
        name: {"scale": round(float(a), 6), "shift": round(float(c), 6)}
        for name, a, c in zip(probe.streams, probe.calib_scale.detach(), probe.calib_shift.detach())}}


def build_manifest(job: Job, root: Path, parity: Parity, conversion: dict) -> dict:
    det, target, fmt = job.detector, job.target, job.target.format
    s, g = det.cfg.crop_size, det.grid
    shape = [1, 3, s, s] if fmt.input_layout == "NCHW" else [1, s, s, 3]
    info = det.probe.info
    n_streams = len(getattr(det.probe, "streams", (info.head,)))
    return {
        "schema": BUNDLE_SCHEMA,
        "name": job.name,
        "target": target.name,
        "precision": job.precision,
        "model_file": fmt.model_file,
        "runtime": fmt.runtime,
        "code": {"entry": device_files.ENTRY_FILE, "package": device_files.PACKAGE_DIR, "version": __version__},
        "input": {"name": fmt.input_name, "shape": shape, "dtype": "float32", "layout": fmt.input_layout,
                  "range": [0, 255], "colour_order": "RGB"},
        "alignment": {
            "crop_size": s,
            "template": np.round(ALIGN_TEMPLATE, 6).tolist(),
            "points": list(LANDMARKS),
            "convention": "(x, y) pixel-index coordinates of the crop: the centre of the top-left pixel is (0, 0), of "
                          "the bottom-right one (S - 1, S - 1); image-left first",
            "method": "least-squares 5-point similarity transform from detected landmarks to the template",
        },
        "outputs": {name: {"shape": shape, "meaning": HEAD_MEANING.get(info.head, {}).get(name, OUTPUT_MEANING[name])}
                    for name, shape in zip(OUTPUTS, ([1], [1], [1, g, g], [1], [1, g, g], [1, n_streams], [1, det.dinov3.cfg.width]))},
        "labels": {"label_set": det.label_set, "label_names": list(det.label_names),
                   "region": det.region_index.region,
                   "region_classes": region_classes(det.label_set, det.region_index.region),
                   "membership_threshold": det.region_index.threshold, "token_grid": [g, g]},
        "probe": {"head": info.head, "threshold_logit": info.threshold,
                  "threshold_probability": 1.0 / (1.0 + math.exp(-info.threshold)), "rule": info.threshold_rule,
                  "positive_class": "fake", "fitted_on": info.fitted_on, "guard": info.guard,
                  "head_config": head_record(det.probe)},
        "files": file_hashes(root),
        "sources": job.sources,
        "random_weights": [part for part, rec in job.sources.items() if not rec.get("sha256")],
        "versions": {"dfedge": __version__, "torch": torch.__version__, "python": platform.python_version(),
                     target.converter: package_version(target.converter)},
        "export_options": job.options,
        "runtime_options": conversion.pop("runtime_options"),  # what parity and the gate ran with; bench.py and dfedge.load apply them
        "validated_on": {k: v for k, v in device_facts(target.name).items() if k not in ("label", "host")},
        "placement": conversion.pop("placement", None),  # where each op runs, and in which precision
        "conversion": conversion,
        "parity": {"reference": "torch fp32 eager", **parity.__dict__},
    }


USAGE = """# {name} — {target} {precision}

## A photo in, a verdict out (numpy and the runtime only)

    python bench.py --image photo.jpg        # (JPEG/PNG need Pillow; a .npy RGB array needs nothing more)

or, in Python: `bench = runpy.run_path("path/to/bundle/bench.py"); det = bench["load"]("path/to/bundle")` (runpy
reads bench.py itself: `import bench` would write a bytecode cache into the bundle, which then fails its check), then
`det.score_image(rgb)` for a uint8 RGB array [H, W, 3] of any size: one verdict per face, with a `status`
(ok, no_face, no_region, implausible_region) and `probability` / `decision` only when the status is ok.
Apps that already have the face's landmarks (ML Kit, Apple Vision) pass them and skip the detector:
`det.score_image(rgb, landmarks=[[x, y]] * 5)`: left eye, right eye, nose tip, left mouth corner, right mouth corner,
"left" meaning image-left, in pixel-index coordinates (the centre of the top-left pixel is (0, 0)).
The face detector ({detector}, {face_files}) and the whole pipeline around the model (dfedge_device/: detection,
alignment, the plausibility guard, verdicts, video streaming) are part of the bundle; bench.py checks every file's
SHA-256 before it imports any of it.

## The model

Input `{input}`: float32, shape {shape} ({layout}), RGB, values 0–255: a face crop aligned with a 5-point
similarity transform to the template in `manifest.json` (`alignment`, same coordinate convention).

Outputs: {outputs}. Read `region_tokens` first: 0 means the {region} was not found and the score must not
be used; a region outside the bounds in `probe.guard` is implausible (a misaligned crop) and not used either.
Decide fake when `logit >= {threshold:.4f}` (probability >= {probability:.4f}, rule: {rule}).

Runtime: {runtime}. `python bench.py` checks every file's SHA-256 against the manifest, times the model on this
device and writes one JSON; `dfedge report merge *.json` tables many devices.
"""


def write_bundle(job: Job, dist: Path, log=lambda msg: None) -> tuple[Path, dict]:
    """Convert, check parity against the job's torch graph, run the gate, write manifest + usage note + bench.py,
    and move the bundle into `dist/name/folder`. A GateError carries what the converter did (`conversion`)."""
    target, precision = job.target, job.precision
    convert = target.convert_for(precision)
    final = Path(dist) / job.name / job.folder
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    conversion: dict = {}
    with temporary(tmp):  # a SIGTERM removes it (models.writing.terminate)
        try:
            try:
                if "parity_reference" not in job.cache:  # once per detector x target, before any runtime is open
                    job.cache["parity_reference"] = reference_outputs(torch_runner(job.detector), job.parity_images)
                convert(job, tmp, conversion)
                gc.collect()  # what of the converter's working copies sits in reference cycles goes before a runtime compiles
                log(f"{job.folder}: converted; checking parity on {len(job.parity_images)} crops")
                options = conversion.setdefault("runtime_options", target.format.options)  # a rung may set its own
                if "placement" not in conversion:  # the runtime's own view on this host (ExecuTorch's: at lowering),
                    # read before the runner opens: its compiled copy of the weights is gone by then
                    conversion["placement"] = placement(tmp, target.name, options) or placement_unobserved(target.format)
                runner, _ = open_runtime(tmp, target.name, interpreter=True, options=options)  # what a device opens (CoreML: MIL off macOS)
                recipe = Recipe("graph", path=str(tmp), target=target.name, options=options)  # the same, in an engine's workers
                probe = job.detector.probe
                vote = (probe.vote_weights.tolist(), probe.step) if hasattr(probe, "vote_weights") else None
                parity = check_parity(job.cache["parity_reference"], runner, job.parity_images, precision, vote,
                                      head(job.detector.cfg.head).selects)
                if not parity.ok:
                    raise ParityError(parity_message(job.folder, parity))
                manifest = build_manifest(job, tmp, parity, conversion)
                manifest["front_end"] = write_front_end(job, tmp)
                if job.temporal is not None:
                    manifest["temporal"] = write_temporal(job, tmp, runner, log, recipe)
                if job.gate is not None:
                    log(f"{job.folder}: parity ok; running the gate")
                    manifest["gate"] = job.gate(runner, recipe)
                    pack = job.gate.pack()
                    if pack is not None:
                        manifest["validation_pack"] = write_pack(job, tmp, pack, runner)
            except GateError as e:
                e.conversion = conversion  # what the converter did (accuracy control's record), for a refused rung's report
                raise
            _finish(job, tmp, manifest)
            replace_folder(tmp, final)
            return final, manifest
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


# The face front end's nets do not depend on the detector, its region index or the precision: converted once per
# target format and exporter in a process (a build of several region indexes, a test session), kept until it exits.
_FRONT_ENDS: dict[tuple, tempfile.TemporaryDirectory] = {}


def write_front_end(job: Job, tmp: Path) -> dict:
    """The face detector's nets (FACE_DETECTOR's row) in the bundle's own format (converted once per process and
    target), checked against the kit's torch nets on toy photos (eval.gate.check_front_end_parity) in every bundle;
    its manifest section."""
    fmt, row = job.target.format, FACE_DETECTOR
    key = (fmt.name, job.target.graph_exporter, mtcnn.shipped_provenance()["sha256"])
    if key not in _FRONT_ENDS:
        folder = tempfile.TemporaryDirectory(prefix="dfedge-front-end-")
        track(folder.name)
        nets = mtcnn.load_mtcnn()
        for net in row.nets:
            job.target.graph_exporter(nets[net.name], torch.zeros(net.example), Path(folder.name) / fmt.graph_file(net.stem),
                                      net.outputs, net.free_size)
        _FRONT_ENDS[key] = folder
    source = Path(_FRONT_ENDS[key].name)
    for item in source.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copyfile)(item, tmp / item.name)
    files = {net.name: fmt.graph_file(net.stem) for net in row.nets}
    section = {"detector": row.name, "title": row.title, "files": files, "inputs": row.inputs,
               "sources": mtcnn.shipped_provenance(), "settings": dict(row.settings)}
    parity = check_front_end_parity(mtcnn.TorchNets(mtcnn.load_mtcnn()).detector(),
                                    open_face_nets(tmp, {"target": fmt.name, "front_end": section}, interpreter=True),
                                    toy_photos(), ALIGN_TEMPLATE, job.detector.cfg.crop_size)
    if not parity["ok"]:
        raise ParityError(f"{job.folder}: face front end: {parity['faces']} faces matched, same faces "
                          f"{parity['same_faces']}, landmarks off by {parity['max_landmark_error_px']:.3f} px, crops by "
                          f"{parity['max_crop_mad']:.3f} grey levels (limits {parity['limits']})")
    return dict(section, parity=parity)


TEMPORAL_PARITY = {"fp32": 1e-4}  # max |Δlogit| of a bundle's temporal graph (exported in fp32 in every rung) against torch
TEMPORAL_FILE = "temporal"


def temporal_windows(job: Job, runner, count: int = 6) -> np.ndarray:
    """Windows [count, T, D + 1] for the temporal graph's parity: the rung's own frame features of the parity crops,
    drawn into windows with some frames invalid (a seeded pattern; the first frame of each valid, the last window
    all valid)."""
    feats = np.concatenate([np.asarray(runner(job.parity_images[i : i + 1])["feature"], np.float32).reshape(1, -1)
                            for i in range(len(job.parity_images))])
    t = job.temporal.cfg.frames
    rng = np.random.default_rng(0)
    picks = torch.from_numpy(feats[rng.integers(0, len(feats), (count, t))])
    valid = torch.from_numpy((rng.random((count, t)) < 0.75).astype(np.float32))
    valid[:, 0], valid[-1] = 1.0, 1.0
    return pack_frames(picks, valid).numpy()


def write_temporal(job: Job, tmp: Path, runner, log=lambda msg: None, recipe=None) -> dict:
    """A video bundle's temporal head (models/temporal.py) in the bundle's format, in fp32 whatever the rung (it is a
    few MFLOP per window against the frame encoder's GFLOPs per frame), checked against the torch head on windows of
    the rung's own frame features, then, with a video gate, the whole rung at video level; its manifest section."""
    head, fmt = job.temporal, job.target.format
    name = fmt.graph_file(TEMPORAL_FILE)
    job.target.graph_exporter(Graph(head), torch.zeros(head.input_shape), tmp / name, TEMPORAL_OUTPUTS, False)
    section = {"file": name, **temporal_section(head), "precision": "fp32",
               "input": {"shape": list(head.input_shape), "dtype": "float32",
                         "meaning": "per frame of a window: the frame encoder's `feature` output, then 1 when the frame "
                                    "had a face and its region (0: features ignored)"},
               "outputs": {"logit": "the window's logit; positive = fake", "probability": "sigmoid(logit)",
                           "valid_frames": "usable frames in the window; below min_valid the window is not scored"},
               "config": dict(head.info.config), "trained_on": head.info.trained_on, "sources": job.temporal_sources,
               "stream": "bench.py --video CLIP [--stride S]: a ring buffer of the last T frames' features, a score "
                         "every S frames once full (S = T by default), the tail scored at the end"}
    session = open_temporal(tmp, {"target": fmt.name, "temporal": section}, interpreter=True)
    x = temporal_windows(job, runner)
    reference = torch_runner(head)
    errors = [float(np.abs(np.asarray(session(x[i : i + 1])["logit"]) - reference(x[i : i + 1])["logit"]).max())
              for i in range(len(x))]
    section["parity"] = {"windows": len(x), "max_abs_logit": max(errors), "limit": TEMPORAL_PARITY["fp32"],
                         "ok": max(errors) <= TEMPORAL_PARITY["fp32"]}
    if not section["parity"]["ok"]:
        raise ParityError(f"{job.folder}: temporal head: max |Δlogit| {max(errors):.3g} > {TEMPORAL_PARITY['fp32']}")
    if job.video_gate is not None:
        log(f"{job.folder}: temporal parity ok; running the video-level gate")
        section["gate"] = job.video_gate(runner, session, recipe)
    return section


def write_pack(job: Job, tmp: Path, pack: dict, runner) -> dict:
    """The validation pack (device.files.VALIDATION_FILE) and what `bench.py --validate` reports from it on this host,
    through the bundle's own runner: the device-side numbers compare against these."""
    with open(tmp / device_files.VALIDATION_FILE, "wb") as f:
        np.savez_compressed(f, **pack)
    host = validate(runner, float(job.detector.probe.info.threshold), tmp)
    return {"file": device_files.VALIDATION_FILE, "crops": len(pack["labels"]), "fakes": int(pack["labels"].sum()),
            "data": job.gate.validation.data.description, "ids": pack["ids"].tolist(), "host": host}


def _finish(job: Job, tmp: Path, manifest: dict) -> None:
    """The device package and its entry script, USAGE.md and the manifest (hashing every file, these included),
    checked against the schema: the kit never writes a manifest its own schema refuses."""
    info = manifest["probe"]
    copy_device_code(tmp)
    (tmp / "USAGE.md").write_text(USAGE.format(
        name=job.name, target=job.target.name, precision=job.precision, input=manifest["input"]["name"],
        shape=manifest["input"]["shape"], layout=job.target.format.input_layout,
        outputs=", ".join(f"`{n}`" for n in OUTPUTS), region=manifest["labels"]["region"],
        threshold=info["threshold_logit"], probability=info["threshold_probability"], rule=info["rule"],
        runtime=job.target.format.runtime, face_files=", ".join(manifest["front_end"]["files"].values()),
        detector=manifest["front_end"]["title"]))
    manifest["files"] = file_hashes(tmp)
    errors = schema_errors(json.loads(json.dumps(manifest)), MANIFEST_SCHEMA)
    if errors:
        raise RuntimeError(f"{job.folder}: the manifest breaks its own schema: {errors[0]}" +
                           (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def copy_device_code(folder: Path) -> None:
    """dfedge/device/ (its .py files) as the bundle's dfedge_device/, and its entry script as bench.py."""
    for source in sorted(DEVICE_PACKAGE.rglob("*.py")):
        rel = source.relative_to(DEVICE_PACKAGE)
        if "__pycache__" not in rel.parts:
            (folder / device_files.PACKAGE_DIR / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, folder / device_files.PACKAGE_DIR / rel)
    shutil.copyfile(DEVICE_PACKAGE / "entry.py", folder / device_files.ENTRY_FILE)


def replace_folder(tmp: Path, final: Path) -> None:
    """Rename the finished folder `tmp` onto `final` (same file system); what was there is removed only after the
    rename, so an interruption leaves either the old folder or the new one."""
    backup = None
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; a bundle (or a set of them) is a folder like any other
    with uninterrupted():  # a SIGTERM waits: never the old folder moved away and the new one not yet in place
        if final.exists():
            backup = final.with_name(f".{final.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            final.rename(backup)
        tmp.rename(final)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
