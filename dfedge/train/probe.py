"""fit-probe: region-pooled features of a labelled set -> logistic regression -> a LinearProbe with a threshold."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.preprocessing import StandardScaler

from ..data.images import to_tensor
from ..data.sources import LabelledSet
from ..models.checkpoint import atomic_write
from ..models.detector import Detector
from ..models import heads
from ..models.frontend import region_stats
from ..models.region import LinearProbe, ProbeInfo

MIN_PER_CLASS = 5


@dataclass
class Features:
    features: np.ndarray  # float32 [N, D]
    labels: np.ndarray  # int64 [N], 1 = fake
    region_tokens: np.ndarray  # float32 [N]
    ids: np.ndarray  # str [N]
    centroids: np.ndarray  # float32 [N, 2] region centroid (row, column) in tokens, NaN without a region


# The plausibility guard (models/frontend.check_region): bounds on the region token count and centroid of genuine
# aligned faces, from the probe's training faces: per statistic the central GUARD_COVERAGE of them, widened by
# GUARD_MARGIN (tokens). Chosen on the toy world (benchmarks/guard.py, docs/front-end.md): false alarms on held-out
# genuine faces <= 0.5 %.
GUARD_COVERAGE = 0.998
GUARD_MARGIN = {"tokens": 1.0, "row": 0.5, "col": 0.5}


GUARD_MIN_FACES = 20


def fit_guard(features: Features, fitted_on: str = "") -> dict | None:
    """Bounds on (token count, centroid row, centroid column) over the faces with a region; None with fewer than
    GUARD_MIN_FACES of them (no guard is better than one fitted on a handful)."""
    found = features.region_tokens > 0
    if found.sum() < GUARD_MIN_FACES:
        return None
    stats = {"tokens": features.region_tokens[found], "row": features.centroids[found, 0],
             "col": features.centroids[found, 1]}
    tail = (1.0 - GUARD_COVERAGE) / 2 * 100
    guard = {name: [round(float(np.percentile(v, tail)) - GUARD_MARGIN[name], 4),
                    round(float(np.percentile(v, 100 - tail)) + GUARD_MARGIN[name], 4)] for name, v in stats.items()}
    return dict(guard, faces=int(found.sum()), coverage=GUARD_COVERAGE, margin=GUARD_MARGIN, fitted_on=fitted_on)


def default_cache_dir() -> Path:
    return Path(os.environ.get("DFEDGE_CACHE", Path.home() / ".cache" / "dfedge")) / "features"


def model_fingerprint(detector: Detector) -> str:
    """Hash of everything that changes features: backbone + region-index weights (parser or distilled head), head,
    region, region-index rung, input sizes."""
    h = hashlib.sha256(f"{detector.cfg}|{detector.dinov3.cfg.img_size}".encode())
    for module in (detector.dinov3, detector.parser, detector.region_head):
        if module is None:
            continue
        for name, t in module.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def extract_features(
    detector: Detector, data: LabelledSet, batch: int = 8, cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Features:
    """Probe inputs for every sample, cached on disk by (model, data) fingerprint."""
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"{model_fingerprint(detector)}-{data.fingerprint()}.npz"
        z = np.load(cache, allow_pickle=False) if cache.is_file() else {}
        if "centroids" in z:  # (a cache written before centroids were kept is computed again)
            if progress:
                progress(len(data), len(data))
            return Features(z["features"], z["labels"], z["region_tokens"], z["ids"], z["centroids"])
    feats, labels, counts, ids, centroids = [], [], [], [], []
    with torch.no_grad():
        for start in range(0, len(data), batch):
            samples = [data[i] for i in range(start, min(len(data), start + batch))]
            feature, mask, count, _, _ = detector.features(to_tensor(np.stack([s.image for s in samples])))
            feats.append(feature.numpy())
            counts.append(count.numpy())
            g = detector.grid
            centroids += [region_stats(m.reshape(g, g))[1:] for m in mask.numpy()]
            labels += [s.label for s in samples]
            ids += [s.id for s in samples]
            if progress:
                progress(start + len(samples), len(data))
    out = Features(np.concatenate(feats).astype(np.float32), np.array(labels, np.int64),
                   np.concatenate(counts).astype(np.float32), np.array(ids), np.array(centroids, np.float32))
    if cache is not None:
        atomic_write(cache, lambda tmp: np.savez(open(tmp, "wb"), features=out.features, labels=out.labels,
                                                 region_tokens=out.region_tokens, ids=out.ids, centroids=out.centroids))
    return out


def check_classes(labels: np.ndarray, where: str) -> None:
    n_fake, n_real = int((labels == 1).sum()), int((labels == 0).sum())
    if min(n_fake, n_real) < MIN_PER_CLASS:
        raise ValueError(
            f"{where}: {n_real} real and {n_fake} fake samples; fitting a probe needs at least {MIN_PER_CLASS} of each"
        )


def check_threshold_rule(rule: str) -> str:
    """'eer', or 'fpr:X' with X a rate strictly between 0 and 1; anything else is a ValueError saying so."""
    if rule == "eer":
        return rule
    try:
        target = float(rule[4:]) if rule.startswith("fpr:") else None
    except ValueError:
        target = None
    if target is None or not 0.0 < target < 1.0:  # NaN fails too
        raise ValueError(f"threshold rule '{rule}': use eer, or fpr:X with X a false-positive rate between 0 and 1 (fpr:0.05)")
    return rule


def choose_threshold(logits: np.ndarray, labels: np.ndarray, rule: str) -> float:
    """Logit threshold: 'eer' (false-positive rate = false-negative rate) or 'fpr:X' (at most X of reals flagged)."""
    check_threshold_rule(rule)
    fpr, tpr, thr = roc_curve(labels, logits)
    finite = np.isfinite(thr)
    fpr, tpr, thr = fpr[finite], tpr[finite], thr[finite]
    if rule == "eer":
        i = int(np.argmin(np.abs(fpr - (1 - tpr))))
        return float(thr[i])
    if rule.startswith("fpr:"):
        target = float(rule[4:])
        ok = np.nonzero(fpr <= target)[0]
        return float(thr[ok[-1]]) if len(ok) else float(thr[0])


@dataclass
class ProbeReport:
    train_auc: float
    used: int
    no_region: int
    threshold: float
    val_auc: float | None = None


def fit_probe(
    train: Features, head: str, region: str, label_set: str, threshold_rule: str = "eer", fitted_on: str = "",
    c: float = 1.0, seed: int = 0,
) -> tuple[LinearProbe, ProbeReport]:
    """Logistic regression on standardised features, folded back into one plain linear layer on raw features.

    Faces without region tokens carry no evidence and are left out of the fit (and counted).
    """
    keep = train.region_tokens > 0 if heads.head(head).regional else np.ones(len(train.labels), bool)
    x, y = train.features[keep].astype(np.float64), train.labels[keep]
    check_classes(y, fitted_on or "training data")
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(scaler.transform(x), y)
    w = clf.coef_[0] / scaler.scale_
    b = float(clf.intercept_[0] - np.sum(clf.coef_[0] * scaler.mean_ / scaler.scale_))
    logits = x @ w + b
    threshold = choose_threshold(logits, y, threshold_rule)
    info = ProbeInfo(head=head, region=region, label_set=label_set, threshold=threshold,
                     threshold_rule=threshold_rule, fitted_on=fitted_on, guard=fit_guard(train, fitted_on))
    probe = LinearProbe(len(w), info)
    with torch.no_grad():
        probe.weight.copy_(torch.from_numpy(w.astype(np.float32)))
        probe.bias.fill_(b)
    report = ProbeReport(train_auc=float(roc_auc_score(y, logits)), used=int(keep.sum()),
                         no_region=int((~keep).sum()), threshold=threshold)
    return probe, report


def probe_auc(probe: LinearProbe, feats: Features) -> float:
    """AUC of the probe on a feature set; faces without region tokens score as the bias alone (as deployed)."""
    check_classes(feats.labels, "validation data")
    with torch.no_grad():
        logits = probe(torch.from_numpy(feats.features)).numpy()
    return float(roc_auc_score(feats.labels, logits))


def fit_heads(build, heads: list[str], sets: tuple, threshold: str, out: Path, features) -> list[tuple[str, ...]]:
    """fit-probe over several heads: build(head) -> a detector (its probe unused), features(detector, head, dataset)
    -> its features; sets = (train, val or None). Writes one probe per head (-HEAD suffixes when several) and returns
    the table rows (head, region, train AUC, val AUC, faces used, no region, threshold, file)."""
    from ..models.region import save_probe

    train_set, val_set = sets
    rows = []
    for h in heads:
        det = build(h)
        probe, report = fit_probe(features(det, h, train_set), h, det.region_index.region, det.label_set, threshold,
                                  train_set.description)
        val_auc = None if val_set is None else probe_auc(probe, features(det, h, val_set))
        path = out if len(heads) == 1 else out.with_name(f"{out.stem}-{h}{out.suffix}")
        save_probe(probe, path)
        rows.append((h, det.region_index.region, f"{report.train_auc:.3f}", "-" if val_auc is None else f"{val_auc:.3f}",
                     str(report.used), str(report.no_region), f"{report.threshold:.3f} ({threshold})", str(path)))
    return rows
