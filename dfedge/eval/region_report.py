"""How far each rung of the region-index ladder (models/ladder.py) moves the detector from the exact rung, on
one labelled set: token-mask agreement (per token, identical faces, IoU), region-token count drift, AUC and
ΔAUC with DeLong's p-value, GFLOPs (this model and the full-size graph) and torch latency on this host.

The probe and DINOv3 are the same in every rung; only the token mask (and with it the pooled feature) changes.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from ..data.samples import LabelledSet
from ..models.writing import atomic_write
from ..models.detector import Detector
from ..models.factory import DetectorSpec, build_detector, gflops, spec_gflops
from ..models.ladder import RUNGS
from .metrics import MaskAgreement, binary_metrics, delong, mask_agreement
from .scores import Runner, Scores, score_set

RunnerOf = Callable[[Detector], Runner]  # e.g. dfedge.runtimes.torch_runner: how each rung's torch graph is run


@dataclass
class RungReport:
    rung: str
    masks: MaskAgreement  # against exact
    region_found: float  # share of faces with at least one region token
    auc: float
    delta_auc: float  # this rung - exact, as a fraction (0.005 = 0.5 pp)
    delong_p: float
    gflops: float  # the model measured here (e.g. toy)
    gflops_full: float  # the same rung at full size (ViT-L/16 + FaRL-B)
    latency_ms: float  # median torch fp32 forward of one face on this host

    def to_json(self) -> dict:
        return dict(asdict(self), masks=asdict(self.masks))


def latency_ms(run: Runner, crop: np.ndarray, runs: int = 5) -> float:
    """Median wall time of one single-face forward pass (after one warm-up)."""
    x = crop[None].transpose(0, 3, 1, 2).astype(np.float32)
    run(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def score_rung(spec: DetectorSpec, data: LabelledSet, runner_of: RunnerOf, batch: int,
               progress=None) -> tuple[Scores, float, float]:
    det = build_detector(spec)
    run = runner_of(det)
    scores = score_set(run, data, batch=batch, progress=progress)
    return scores, gflops(det)["total"], latency_ms(run, data[0].image)


def region_index_report(spec: DetectorSpec, rungs: list[str], data: LabelledSet, runner_of: RunnerOf,
                        region_head: str | None = None, batch: int = 8,
                        progress: Callable[[str, int], None] | None = None) -> list[RungReport]:
    """One RungReport per rung (exact first, always measured: it is the reference), each rung's torch graph run by
    `runner_of(detector)`. `region_head` is the distilled rung's head file (default: the preset's shipped head)."""
    base = replace(spec, region_index="exact", region_head=None)
    names = ["exact"] + [r for r in rungs if r != "exact"]
    for r in names:
        if r not in RUNGS:
            raise ValueError(f"unknown region index '{r}' (known: {', '.join(RUNGS)})")
    full = {r: spec_gflops(DetectorSpec(preset="full", region_index=r, dinov3_input=spec.dinov3_input))["total"]
            for r in names}
    reports, ref = [], None
    for r in names:
        rung_spec = replace(base, region_index=r, region_head=region_head if r == "distilled" else None)
        step = (lambda n=1, r=r: progress(r, n)) if progress else None
        scores, flops, latency = score_rung(rung_spec, data, runner_of, batch, step)
        ref = ref or scores
        test = delong(ref.labels, ref.logits, scores.logits)
        reports.append(RungReport(
            rung=r, masks=mask_agreement(ref.token_masks, scores.token_masks),
            region_found=float((scores.region_tokens > 0).mean()),
            auc=binary_metrics(scores.labels, scores.logits, 0.0).auc, delta_auc=test.delta, delong_p=test.p_value,
            gflops=flops, gflops_full=full[r], latency_ms=latency,
        ))
    return reports


COLUMNS = ("rung", "token agreement", "identical masks", "mask IoU", "count drift (mean/max)", "region found",
           "AUC", "ΔAUC", "DeLong p", "GFLOPs (this model)", "GFLOPs (full size)", "× fewer (full)", "latency ms")


def rows(reports: list[RungReport]) -> list[tuple[str, ...]]:
    """Table cells, one row per rung, in COLUMNS order."""
    exact_full = reports[0].gflops_full
    out = []
    for r in reports:
        m = r.masks
        out.append((
            r.rung, f"{m.token_agreement:.2%}", f"{m.exact_faces:.1%}", f"{m.mean_iou:.3f}",
            f"{m.count_drift_mean:.2f} / {m.count_drift_max}", f"{r.region_found:.1%}", f"{r.auc:.4f}",
            f"{r.delta_auc * 100:+.2f} pp", f"{r.delong_p:.3g}", f"{r.gflops:.3f}", f"{r.gflops_full:.1f}",
            f"{exact_full / r.gflops_full:.1f}×", f"{r.latency_ms:.1f}",
        ))
    return out


def markdown(reports: list[RungReport], data: str, spec: DetectorSpec) -> str:
    head = "| " + " | ".join(COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = "\n".join("| " + " | ".join(r) + " |" for r in rows(reports))
    return (f"# Region-index ladder on {data}\n\nPreset `{spec.preset}`, region `{spec.region}`, head `{spec.head}`, "
            f"DINOv3 input {spec.dinov3_input}; every rung against `exact` on the same {data}. Latency: torch fp32, one "
            f"face, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}.\n\n"
            f"{head}\n{sep}\n{body}\n")


def write_report(reports: list[RungReport], data: str, spec: DetectorSpec, path) -> None:
    """Markdown at `path` and the numbers as JSON beside it."""
    from pathlib import Path

    path = Path(path)
    atomic_write(path, lambda tmp: tmp.write_text(markdown(reports, data, spec)))
    record = {"data": data, "detector": asdict(spec), "rungs": [r.to_json() for r in reports]}
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
