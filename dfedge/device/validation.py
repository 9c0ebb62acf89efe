"""On-device validation: the bundle's validation pack (aligned crops, labels, the torch FP32 reference's scores)
scored on the device it runs on, against the reference's figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import BundleError
from .files import VALIDATION_FILE


def to_input(crop: np.ndarray) -> np.ndarray:
    """uint8 HWC crop -> float32 [1, 3, H, W] 0-255, the graphs' input."""
    return crop.transpose(2, 0, 1)[None].astype(np.float32)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic with mid-ranks for ties. Written here, not sklearn.metrics.roc_auc_score
    (the kit's own metric): this file runs on devices that have numpy and the runtime only."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(labels) == 1
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if not n1 or not n0:
        raise ValueError("an AUC needs both classes")
    order = np.argsort(scores, kind="mergesort")
    _, inverse, counts = np.unique(scores[order], return_inverse=True, return_counts=True)
    ranks = np.empty(len(scores))
    ranks[order] = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def validate(run, threshold: float, bundle: str | Path) -> dict:
    """Score the bundle's validation pack with `run` on this device: AUC against the pack's labels beside the torch
    FP32 reference's (stored in the pack), decision flips (the bundle's at its `threshold`, the reference's at the
    threshold the pack records, packs before it: the same) and token-mask agreement against the reference."""
    path = Path(bundle) / VALIDATION_FILE
    if not path.is_file():
        raise BundleError(f"{path}: no validation pack in this bundle (build it with --validation-pack N)")
    try:
        with np.load(path, allow_pickle=False) as pack:
            images, labels = pack["images"], pack["labels"]
            ref_logits, ref_masks = pack["logits"].astype(np.float64), pack["token_masks"]
            ref_threshold = float(pack["threshold"]) if "threshold" in pack.files else float(threshold)
    except Exception as e:  # noqa: BLE001 - whatever np.load raises (zip, zlib, format): the pack is unreadable
        raise BundleError(f"{path}: not a readable validation pack ({type(e).__name__}: {e})") from e
    if not math.isfinite(ref_threshold) or not math.isfinite(threshold):
        raise BundleError(f"{path}: a decision threshold that is not a finite number")
    if len(set(np.asarray(labels).tolist())) < 2 or len(images) != len(ref_logits) or ref_masks.ndim != 3:
        raise BundleError(f"{path}: a validation pack needs fakes and reals, one reference score and mask per crop")
    logits, masks = np.empty(len(images)), np.empty(ref_masks.shape, bool)
    for i, crop in enumerate(images):
        out = run(to_input(crop))
        logits[i] = float(np.ravel(out["logit"])[0])
        mask = np.asarray(out["token_mask"])
        if mask.size != ref_masks[i].size:
            raise BundleError(f"{path}: its token masks are {ref_masks.shape[1:]}, the model's {mask.shape}")
        masks[i] = mask.reshape(ref_masks.shape[1:]) > 0.5
    reference_auc, device_auc = auc(labels, ref_logits), auc(labels, logits)
    return {"crops": int(len(images)), "reference_auc": reference_auc, "auc": device_auc,
            "delta_auc": device_auc - reference_auc,
            "flip_rate": float(np.mean((logits >= threshold) != (ref_logits >= ref_threshold))),
            "mask_agreement": float(np.mean(masks == ref_masks)), "max_abs_logit": float(np.max(np.abs(logits - ref_logits))),
            "threshold": float(threshold), "reference_threshold": ref_threshold}


def same_threshold(a: float, b: float) -> bool:
    """Two decision thresholds (logits) are the same one, up to their JSON and float32 round trips."""
    return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))


def over_budget(result: dict, manifest: dict) -> list[str]:
    """Why a validation on this device fails the bundle's own budgets (the manifest's gate: AUC drop, token-mask
    agreement), or decides otherwise than the reference it was validated against (its threshold); [] when it passes."""
    reasons = []
    if not same_threshold(result["threshold"], result["reference_threshold"]):
        reasons.append(f"the bundle decides at logit >= {result['threshold']:.6g}, the reference it was validated "
                       f"against at >= {result['reference_threshold']:.6g}")
    budget = (manifest.get("gate") or {}).get("budget") or {}
    if "max_auc_drop" in budget and -result["delta_auc"] > budget["max_auc_drop"]:
        reasons.append(f"AUC drop {-result['delta_auc'] * 100:.2f} pp > budget {budget['max_auc_drop'] * 100:.2f} pp")
    if budget.get("min_mask_agreement") is not None and result["mask_agreement"] < budget["min_mask_agreement"]:
        reasons.append(f"token-mask agreement {result['mask_agreement']:.4f} < {budget['min_mask_agreement']:.4f}")
    return reasons
