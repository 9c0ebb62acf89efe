"""A bundle per target x precision: `dist/<name>/<target>-<precision>/` with the model file(s), manifest.json and
USAGE.md. Written into a temporary folder beside the final one and renamed into place only after export and
the parity check succeed, so a failed export leaves no bundle behind."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..models.checkpoint import sha256_file
from ..models.detector import ALIGN_TEMPLATE, OUTPUT_NAMES, Detector
from ..models.region import region_classes
from ..runtimes import standalone
from ..runtimes.standalone import MANIFEST, verify  # noqa: F401 - verify is part of this module's API
from .targets import Target, parity_limits

SCHEMA = standalone.BUNDLE_SCHEMA
BENCH_SCRIPT = "bench.py"  # a copy of dfedge/runtimes/standalone.py: times the bundle with its runtime alone

OUTPUT_MEANING = {
    "logit": "probe logit; positive = fake",
    "probability": "sigmoid(logit) = P(fake)",
    "token_mask": "1 where the token belongs to the region (parser-indexed), else 0",
    "region_tokens": "number of region tokens; 0 = region not found, do not use the score",
    "contributions": "w.x_t/|R| per region token; sum + probe bias = logit",
}


class ParityError(RuntimeError):
    """The exported graph does not compute what the torch reference computes."""


class GateError(RuntimeError):
    """A compressed artifact decides differently from the reference beyond its budget: it is not shipped."""


@dataclass
class Parity:
    max_abs_logit: float
    max_logit_error: float  # |Δlogit| / max(1, |logit|), what the limits apply to (targets.PARITY)
    mean_abs_logit: float
    mask_agreement: float
    masks_identical: bool
    samples: int
    ok: bool
    thresholds: dict = field(default_factory=dict)


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
        if rel in (MANIFEST,):
            continue
        out[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return out


def check_parity(detector: Detector, runner, images: np.ndarray, precision: str) -> Parity:
    """Run the exported graph and the torch reference on the same crops [N, 3, 448, 448] float32, one at a time."""
    dl, err, agree, identical = [], [], [], True
    with torch.no_grad():
        for image in images:
            ref = detector(torch.from_numpy(image[None]))
            out = runner(image[None])
            diff = np.abs(np.asarray(out["logit"], np.float64).reshape(-1) - ref.logit.numpy().reshape(-1))
            dl.append(float(diff.max()))
            err.append(float((diff / np.maximum(1.0, np.abs(ref.logit.numpy().reshape(-1)))).max()))
            mask_ref, mask_out = ref.token_mask.numpy() > 0.5, np.asarray(out["token_mask"]) > 0.5
            agree.append(float((mask_ref == mask_out).mean()))
            identical &= bool((mask_ref == mask_out).all())
    limits = parity_limits(precision)
    max_err, agreement = max(err), float(np.mean(agree))
    ok = (limits["max_logit_error"] is None or max_err <= limits["max_logit_error"]) and agreement >= limits["mask_agreement"]
    return Parity(max(dl), max_err, float(np.mean(dl)), agreement, identical, len(images), ok, dict(limits))


def embedded_metadata(detector: Detector, name: str, precision: str) -> dict[str, str]:
    """Key facts stored inside the model file itself (ONNX metadata_props, OpenVINO rt_info, CoreML user metadata)."""
    info = detector.probe.info
    return {
        "dfedge.schema": SCHEMA, "dfedge.version": __version__, "dfedge.name": name, "dfedge.precision": precision,
        "dfedge.input": f"image float32 RGB 0-255 {detector.cfg.crop_size}x{detector.cfg.crop_size} aligned crop",
        "dfedge.template": json.dumps(np.round(ALIGN_TEMPLATE, 4).tolist()),
        "dfedge.label_set": detector.label_set, "dfedge.region": detector.region_index.region,
        "dfedge.threshold_logit": repr(float(info.threshold)), "dfedge.outputs": ",".join(OUTPUT_NAMES),
    }


def build_manifest(detector: Detector, target: Target, precision: str, name: str, root: Path, sources: dict,
                   options: dict, parity: Parity) -> dict:
    s, g = detector.cfg.crop_size, detector.grid
    shape = [1, 3, s, s] if target.input_layout == "NCHW" else [1, s, s, 3]
    info = detector.probe.info
    label_set = detector.label_set
    return {
        "schema": SCHEMA,
        "name": name,
        "target": target.name,
        "precision": precision,
        "model_file": target.model_file,
        "runtime": target.runtime,
        "input": {"name": "image", "shape": shape, "dtype": "float32", "layout": target.input_layout,
                  "range": [0, 255], "colour_order": "RGB"},
        "alignment": {
            "crop_size": s,
            "template": np.round(ALIGN_TEMPLATE, 6).tolist(),
            "points": ["left eye", "right eye", "nose tip", "left mouth corner", "right mouth corner"],
            "convention": "(x, y) pixels of the crop, image-left first; pixel centres at i + 0.5",
            "method": "least-squares 5-point similarity transform from detected landmarks to the template",
        },
        "outputs": {
            "logit": {"shape": [1], "meaning": OUTPUT_MEANING["logit"]},
            "probability": {"shape": [1], "meaning": OUTPUT_MEANING["probability"]},
            "token_mask": {"shape": [1, g, g], "meaning": OUTPUT_MEANING["token_mask"]},
            "region_tokens": {"shape": [1], "meaning": OUTPUT_MEANING["region_tokens"]},
            "contributions": {"shape": [1, g, g], "meaning": OUTPUT_MEANING["contributions"]},
        },
        "labels": {"label_set": label_set, "label_names": list(detector.label_names),
                   "region": detector.region_index.region,
                   "region_classes": region_classes(label_set, detector.region_index.region),
                   "membership_threshold": detector.region_index.threshold, "token_grid": [g, g]},
        "probe": {"head": info.head, "threshold_logit": info.threshold,
                  "threshold_probability": 1.0 / (1.0 + math.exp(-info.threshold)), "rule": info.threshold_rule,
                  "positive_class": "fake", "fitted_on": info.fitted_on},
        "files": file_hashes(root),
        "sources": sources,
        "versions": {"dfedge": __version__, "torch": torch.__version__, "python": platform.python_version(),
                     target.converter: package_version(target.converter)},
        "export_options": options,
        "parity": {"reference": "torch fp32 eager", **parity.__dict__},
    }


USAGE = """# {name} — {target} {precision}

Input `image`: float32, shape {shape} ({layout}), RGB, values 0–255: a face crop aligned with a 5-point
similarity transform to the template in `manifest.json` (`alignment`).

Outputs: {outputs}. Read `region_tokens` first: 0 means the {region} was not found and the score must not
be used. Decide fake when `logit >= {threshold:.4f}` (probability >= {probability:.4f}, rule: {rule}).

Runtime: {runtime}. `python bench.py` (numpy and the runtime only) checks every file's SHA-256 against the
manifest, times the model on this device and writes one JSON; `dfedge report merge *.json` tables many devices.
"""


def write_bundle(detector: Detector, target: Target, precision: str, dist: Path, name: str, sources: dict,
                 options: dict, parity_images: np.ndarray, log=lambda msg: None, cache: dict | None = None,
                 export_fn=None, gate=None, folder: str | None = None) -> tuple[Path, dict]:
    """Export, check parity, write manifest + usage note, and move the bundle into `dist/name/target-precision`.

    `export_fn` replaces the target's exporter (quantizers use the same signature); `gate(runner) -> dict` runs
    after parity (e.g. the AUC drift of a quantized rung), raises GateError to refuse the bundle, and its result
    is stored in the manifest under "gate". `folder` names the bundle (default: target-precision)."""
    if precision not in target.precisions + target.quantized:
        raise ValueError(f"target '{target.name}' has no precision '{precision}' "
                         f"(has: {', '.join(target.precisions + target.quantized)})")
    final = Path(dist) / name / (folder or f"{target.name}-{precision}")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        example = torch.from_numpy(parity_images[:1].copy())
        (export_fn or target.exporter().export)(detector, example, tmp, precision,
                                                embedded_metadata(detector, name, precision), cache)
        log(f"{target.name}-{precision}: exported; checking parity on {len(parity_images)} crops")
        runner = target.exporter().load(tmp)
        parity = check_parity(detector, runner, parity_images, precision)
        if not parity.ok:
            raise ParityError(
                f"{target.name}-{precision}: logit error {parity.max_logit_error:.2e} (max |dlogit| "
                f"{parity.max_abs_logit:.2e}), mask agreement "
                f"{parity.mask_agreement:.4f} (limits {parity.thresholds})"
            )
        manifest = build_manifest(detector, target, precision, name, tmp, sources, options, parity)
        if gate is not None:
            log(f"{target.name}-{precision}: parity ok; running the gate")
            manifest["gate"] = gate(runner)
        info = manifest["probe"]
        shutil.copyfile(standalone.__file__, tmp / BENCH_SCRIPT)
        (tmp / "USAGE.md").write_text(USAGE.format(
            name=name, target=target.name, precision=precision, shape=manifest["input"]["shape"],
            layout=target.input_layout, outputs=", ".join(f"`{n}`" for n in OUTPUT_NAMES),
            region=manifest["labels"]["region"], threshold=info["threshold_logit"],
            probability=info["threshold_probability"], rule=info["rule"], runtime=target.runtime))
        manifest["files"] = file_hashes(tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        backup = None
        if final.exists():
            backup = final.with_name(f".{final.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            final.rename(backup)
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; a bundle is a folder like any other
        tmp.rename(final)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
        return final, manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def source_record(path: str | Path | None, fallback: str) -> dict:
    if path is None:
        return {"file": None, "sha256": None, "note": fallback}
    path = Path(path)
    return {"file": path.name, "sha256": sha256_file(path)}


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def weight_sources(spec) -> dict:
    """The manifest's `sources`: file name and SHA-256 of each weight file the detector of `spec` was built from."""
    from ..models.factory import shipped_file

    index = "region_head" if spec.region_index == "distilled" else "parser"
    files = {part: getattr(spec, part) or shipped_file(spec.preset, part) for part in ("dinov3", index, "probe")}
    return {part: source_record(f, f"seeded random weights (preset {spec.preset}, seed {spec.seed})")
            for part, f in files.items()}


def toy_crops(count: int, split: str = "val") -> np.ndarray:
    """Toy-world crops [N, 3, 448, 448] float32 0-255: what parity checks run on (they need no labels)."""
    from ..data.sources import ToySet

    toy = ToySet(split, count)
    return np.stack([toy[i].image for i in range(count)]).transpose(0, 3, 1, 2).astype(np.float32)
