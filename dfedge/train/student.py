"""distill-backbone: a student backbone, the compression axis beside quantization and the distilled region index.

A smaller ViT of the DINOv3 architecture (the preset's student shape: ViT-S/16 at full size; see
dinov3.PRESETS) with a linear adapter to the teacher's token width learns to reproduce the teacher's final patch
tokens and CLS (what the probe pools and the region head reads) on unlabelled face crops, so the teacher's probe and
region head are reused as they are, without labels:

    crops -> teacher DINOv3: normed patch tokens [N, g*g, D] and CLS [N, D] (targets)
          -> student (initialised from the user's official small checkpoint when given, else from scratch) trained
             on (1 - cosine) + MSE / Var(teacher) per token, AdamW, one-cycle
          -> held-out faces: token cosine, region-feature cosine (the teacher's region masks)
          -> labelled faces (optional): AUC of teacher and student detectors per region index, DeLong p, masks

`python -m dfedge.train.student` rebuilds the toy student shipped in dfedge/weights.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.images import to_tensor
from ..data.sources import open_set
from ..eval.metrics import delong, mask_agreement
from ..models import dinov3 as dinov3_lib
from ..models.checkpoint import CheckpointError, save_safetensors, sha256_file
from ..models.writing import atomic_write
from ..models.detector import Detector
from ..models.factory import DetectorSpec, build_detector, dinov3_config, gflops, meta_detector, shipped_file, spec_gflops
from .distill import WEIGHTS_DIR, face_images, held_out_split, optimise

MANIFEST_FORMAT = "dfedge-student/1"
CONFIG_KEY = "dfedge_dinov3_config"  # = what dinov3.load_dinov3 reads: the student's shape and adapter width


@dataclass(frozen=True)
class StudentSettings:
    steps: int = 4000
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    cls_weight: float = 0.5  # the CLS token too: the cls head and ablations read it
    region_weight: float = 1.0  # the teacher's region tokens once more: the ones the probe pools
    probe_weight: float = 1.0  # each token's share of the logit (the probe's projection): no labels, the probe's own axis
    held_out: float = 0.1  # share of faces kept for the cosine report
    seed: int = 0


@dataclass
class TeacherSet:
    inputs: torch.Tensor  # [N, 3, s, s] what DINOv3 sees: the crop area-downsampled to its input, 0-255
    patches: torch.Tensor  # [N, g*g, D] the teacher's normed patch tokens
    cls: torch.Tensor  # [N, D]
    masks: torch.Tensor  # [N, g*g] the teacher's region mask (exact parser): for the region-feature cosine
    description: str


def collect(teacher: Detector, faces: str, batch: int = 16) -> TeacherSet:
    """Run the teacher (exact region index) once over the crops."""
    images, count, description = face_images(faces)
    inputs, patches, cls, masks, chunk = [], [], [], [], []
    with torch.no_grad():
        for i, image in enumerate(images):
            chunk.append(image)
            if len(chunk) == batch or i + 1 == count:
                x = to_tensor(np.stack(chunk))
                small = F.avg_pool2d(x, teacher.downsample) if teacher.downsample > 1 else x
                p, c = teacher.embed(x)
                _, mask, _ = teacher.features(x)
                inputs.append(small)
                patches.append(p)
                cls.append(c)
                masks.append(mask)
                chunk = []
    return TeacherSet(torch.cat(inputs), torch.cat(patches), torch.cat(cls), torch.cat(masks), description)


def student_backbone(spec: DetectorSpec, init: str | Path | None = None) -> dinov3_lib.DinoV3:
    """The student of `spec`'s teacher: the preset's student shape with an adapter to the teacher's width, from
    scratch or from the user's official small checkpoint (its keys checked strictly; the adapter starts at random)."""
    cfg = dinov3_config(replace(spec, backbone="student", student=None, student_sha256=None))
    student = dinov3_lib.DinoV3(cfg)
    if init:
        trunk = dinov3_lib.load_dinov3(init, replace(cfg, out_dim=None), img_size=cfg.img_size)
        missing, unexpected = student.load_state_dict(trunk.state_dict(), strict=False)
        if unexpected or any(not k.startswith("adapter.") for k in missing):
            raise CheckpointError(f"{init}: not a {cfg.embed_dim}-wide, {cfg.depth}-block DINOv3 (unexpected "
                                  f"{unexpected[:2]}, missing {[k for k in missing if not k.startswith('adapter.')][:2]})")
    return student


def _scaled(teacher: Detector, x: torch.Tensor) -> torch.Tensor:
    return x * teacher.dino_scale + teacher.dino_shift  # DINOv3's normalisation, as the detector applies it


def token_loss(student: torch.Tensor, teacher: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """(1 - cosine) + MSE / Var(teacher): direction and scale of each token."""
    cosine = F.cosine_similarity(student, teacher, dim=-1).mean()
    return (1.0 - cosine) + ((student - teacher) ** 2).mean() / variance


def train_student(student: dinov3_lib.DinoV3, teacher: Detector, data: TeacherSet, settings: StudentSettings,
                  log: Callable[[str], None] = print) -> torch.Tensor:
    """Fit `student` in place; returns the indices of the held-out faces."""
    teacher.requires_grad_(False)  # (its probe gives the projection term; only the student learns)
    gen = torch.Generator().manual_seed(settings.seed)
    held, train = held_out_split(len(data.inputs), settings.held_out, gen)
    var_p, var_c = data.patches[train].var(), data.cls[train].var()
    project = teacher.probe.project
    with torch.no_grad():
        var_w = project(data.patches[train]).var()

    def loss_of(pick: torch.Tensor) -> torch.Tensor:
        patches, cls, _ = student(_scaled(teacher, data.inputs[pick]))
        target, mask = data.patches[pick], data.masks[pick] > 0.5
        loss = token_loss(patches, target, var_p) + settings.cls_weight * token_loss(cls, data.cls[pick], var_c)
        if settings.region_weight and mask.any():
            loss = loss + settings.region_weight * token_loss(patches[mask], target[mask], var_p)
        if settings.probe_weight:  # (1 - cosine) cannot see a small error along the probe's axis: this term can
            loss = loss + settings.probe_weight * ((project(patches) - project(target)) ** 2).mean() / var_w
        return loss

    optimise(student, loss_of, train, settings, gen, lambda step, loss, t: log(
        f"student step {step:5d}/{settings.steps} loss {loss:.4f} ({t:.0f}s)"))
    return held


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a, b, dim=-1).mean())


def feature_agreement(student: dinov3_lib.DinoV3, teacher: Detector, data: TeacherSet, faces: torch.Tensor) -> dict:
    """On held-out faces: mean cosine of the patch tokens, of the CLS, and of the region features (the masked mean
    the probe reads, over the teacher's region tokens; faces without region tokens are left out)."""
    with torch.no_grad():
        out = [student(_scaled(teacher, data.inputs[faces[i : i + 32]])) for i in range(0, len(faces), 32)]
    patches, cls = torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])
    mask = data.masks[faces]
    has = mask.sum(dim=1) > 0
    pooled = lambda t: (t * mask[..., None]).sum(dim=1)[has] / mask.sum(dim=1)[has, None]  # noqa: E731
    return {"faces": int(len(faces)), "token_cosine": _cosine(patches, data.patches[faces]),
            "cls_cosine": _cosine(cls, data.cls[faces]),
            "region_feature_cosine": _cosine(pooled(patches), pooled(data.patches[faces])) if has.any() else None,
            "faces_with_region": int(has.sum())}


def _scores(detector: Detector, crops: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    logits, masks = [], []
    with torch.no_grad():
        for i in range(0, len(crops), batch):
            out = detector(torch.from_numpy(crops[i : i + batch]))
            logits.append(out.logit.reshape(-1).numpy())
            masks.append(out.token_mask.numpy() > 0.5)
    return np.concatenate(logits), np.concatenate(masks)


def _latency_ms(detector: Detector, crop: np.ndarray, runs: int = 5) -> float:
    x = torch.from_numpy(crop[:1])
    times = []
    with torch.no_grad():
        detector(x)
        for _ in range(runs):
            start = time.perf_counter()
            detector(x)
            times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def compare(spec: DetectorSpec, student: dinov3_lib.DinoV3, data: str, rungs: tuple[str, ...] = ("exact", "distilled")) -> list[dict]:
    """Teacher vs student detectors on a labelled set, per region index: AUC and DeLong p, the student's masks vs
    the teacher's exact ones, GFLOPs and torch eager latency (1 face, this process, same run)."""
    dataset = open_set(data, spec.region)
    crops, labels = dataset.crops(), dataset.labels()
    rows, exact_masks = [], None
    for r in rungs:
        teacher_spec = replace(spec, region_index=r, backbone="teacher", student=None, student_sha256=None)
        student_spec = replace(teacher_spec, backbone="student")
        teacher, det = build_detector(teacher_spec), build_detector(teacher_spec)
        det.dinov3 = student  # the teacher's detector with the student backbone: its probe and region index as they are
        t_logits, t_masks = _scores(teacher, crops)
        s_logits, s_masks = _scores(det, crops)
        exact_masks = t_masks if exact_masks is None else exact_masks
        test = delong(labels, t_logits, s_logits)
        agree = mask_agreement(exact_masks, s_masks)
        rows.append({"region_index": r, "data": dataset.description, "faces": int(len(labels)),
                     "teacher_auc": test.auc_a, "student_auc": test.auc_b, "delta_auc": test.delta, "delong_p": test.p_value,
                     "mask_token_agreement_vs_teacher_exact": agree.token_agreement,
                     "teacher_gflops": spec_gflops(teacher_spec)["total"],
                     "student_gflops": spec_gflops(student_spec)["total"],
                     "teacher_ms": _latency_ms(teacher, crops), "student_ms": _latency_ms(det, crops)})
    return rows


def backbone_gflops(preset: str) -> dict:
    """GFLOPs of the teacher and the student backbone alone (one face) of `preset`, and the ratio."""
    out = {}
    for backbone in ("teacher", "student"):
        det = meta_detector(DetectorSpec(preset=preset, backbone=backbone, region_index="distilled"))
        out[backbone] = gflops(det)["dinov3"]
    return dict(out, ratio=out["teacher"] / out["student"])


def save_student(student: dinov3_lib.DinoV3, path: Path, manifest: dict) -> dict:
    """safetensors (shape, adapter width and the teacher's SHA-256 in its metadata) and the JSON manifest beside it."""
    path = Path(path)
    meta = {CONFIG_KEY: dinov3_lib.config_json(student.cfg), "teacher_sha256": manifest["teacher"]["sha256"] or ""}
    save_safetensors(path, dinov3_lib.to_official(student), meta)
    manifest = dict(manifest, weights=path.name, weights_sha256=sha256_file(path))
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
    return manifest


def distill_backbone(spec: DetectorSpec, faces: str, out: Path, data: str | None = None, init: str | Path | None = None,
                     settings: StudentSettings = StudentSettings(), log: Callable[[str], None] = print) -> dict:
    """The whole command: collect the teacher's tokens, train, report, save. Returns the manifest."""
    if Path(out).suffix != ".safetensors":
        raise ValueError(f"{out}: output must end in .safetensors")
    teacher_spec = replace(spec, backbone="teacher", student=None, student_sha256=None, region_index="exact",
                           region_head=None, region_head_sha256=None)
    teacher = build_detector(teacher_spec)
    torch.manual_seed(settings.seed)
    student = student_backbone(spec, init)
    log(f"teacher tokens on {faces} ...")
    tokens = collect(teacher, faces)
    held = train_student(student, teacher, tokens, settings, log)
    agreement = feature_agreement(student, teacher, tokens, held)
    log(f"held-out ({agreement['faces']} faces): token cosine {agreement['token_cosine']:.4f}, region-feature cosine "
        f"{agreement['region_feature_cosine'] or float('nan'):.4f}")
    teacher_file = spec.dinov3 or shipped_file(spec.preset, "dinov3")
    manifest = {
        "format": MANIFEST_FORMAT,
        "config": json.loads(dinov3_lib.config_json(student.cfg)),
        "teacher": {"preset": spec.preset, "file": Path(teacher_file).name if teacher_file else None,
                    "sha256": sha256_file(teacher_file) if teacher_file else None,
                    "config": json.loads(dinov3_lib.config_json(teacher.dinov3.cfg))},
        "init": {"file": Path(init).name, "sha256": sha256_file(init)} if init else "from scratch (seeded)",
        "data": {"faces": faces, "description": tokens.description, "count": len(tokens.inputs), "held_out": int(len(held))},
        "training": dict(asdict(settings), loss="(1 - cosine) + MSE/Var(teacher) on patch tokens, + cls_weight x on CLS, "
                         "+ region_weight x on the teacher's region tokens, + probe_weight x MSE/Var of the probe's per-token projection",
                         torch=torch.__version__, threads=torch.get_num_threads()),
        "agreement": agreement,
        "gflops_backbone": {"this preset": backbone_gflops(spec.preset), "full": backbone_gflops("full")},
        "comparison": compare(teacher_spec, student, data) if data else None,
    }
    return save_student(student, out, manifest)


def summary(manifest: dict, out: Path) -> list[str]:
    """What distill-backbone prints: the held-out cosines, the compute ratio, the comparison per region index."""
    a, g = manifest["agreement"], manifest["gflops_backbone"]
    lines = [f"wrote {out} and {Path(out).with_suffix('.json')}: held-out token cosine {a['token_cosine']:.4f}, region-feature "
             f"cosine {a['region_feature_cosine'] or float('nan'):.4f} ({a['faces']} faces); backbone "
             f"{g['this preset']['ratio']:.1f}× fewer GFLOPs than the teacher ({g['full']['ratio']:.1f}× at full size)"]
    for row in manifest["comparison"] or []:
        lines.append(f"{row['region_index']}: AUC teacher {row['teacher_auc']:.4f}, student {row['student_auc']:.4f} "
                     f"(Δ {row['delta_auc'] * 100:+.2f} pp, DeLong p {row['delong_p']:.3f}) on {row['data']}")
    return lines + [f"next: dfedge build --backbone student --student {out} --region-index distilled"]


def build_toy_student(out_dir: Path = WEIGHTS_DIR, faces: str = "toy:2000", log: Callable[[str], None] = print) -> dict:
    """The shipped toy student, from the shipped toy teacher. Deterministic for a fixed thread count: the shipped file
    was trained on 1 thread (its manifest records it), so this uses 1."""
    torch.set_num_threads(1)
    return distill_backbone(DetectorSpec(preset="toy"), faces, out_dir / "toy_student.safetensors", data="toy:val:200", log=log)


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--faces", default="toy:2000")
    args = ap.parse_args()
    manifest = build_toy_student(args.out, args.faces)
    print(json.dumps({k: manifest[k] for k in ("agreement", "gflops_backbone", "comparison")}, indent=2))
