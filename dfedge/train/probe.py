"""fit-probe: a head's pooled features of a labelled set -> its probe with an operating threshold.

    region, cls, all, farl-region  logistic regression on the pooled feature (one linear layer)
    topk                           salience layer and linear layer trained jointly (Adam, cross-entropy), with LFM's
                                   training-only regularisers as options: rank-based linear dropout, random-K
    ensemble                       one logistic regression per stream on 3/4 of the training faces, each stream
                                   calibrated (Platt or temperature) on the held-out 1/4
"""

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
from ..models.writing import atomic_write
from ..models.detector import Detector
from ..models import heads
from ..device.verdict import region_stats
from ..models.region import LinearProbe, ProbeInfo, check_vote_weights, make_probe

MIN_PER_CLASS = 5


@dataclass
class Features:
    features: np.ndarray  # float32 [N, ...]: the head's pool (models/pooling.Pool), [N, D] for the mean heads
    labels: np.ndarray  # int64 [N], 1 = fake
    region_tokens: np.ndarray  # float32 [N]
    ids: np.ndarray  # str [N]
    centroids: np.ndarray  # float32 [N, 2] region centroid (row, column) in tokens, NaN without a region


# The plausibility guard (device/verdict.check_region): bounds on the region token count and centroid of genuine
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
            feature, mask, count = detector.features(to_tensor(np.stack([s.image for s in samples])))
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


@dataclass(frozen=True)
class HeadSettings:
    """fit-probe's options for the heads with more than one linear layer (defaults: the papers')."""

    top_k: int = 16  # LFM: K responses per salience channel (fixed in the probe, hence in every exported graph)
    salience_channels: int = 64
    rank_dropout: float = 0.0  # LFM's rank-based linear dropout: the rank-r slot dropped with p * (1 - r/(K-1))
    random_k: bool = False  # LFM's random-K sampling: each step keeps only the first k ~ U{1..K} slots
    steps: int = 100  # topk: Adam steps of 256 faces (toy: more steps fit the training faces, not the held-out ones)
    lr: float = 3e-3
    vote_weights: tuple[float, ...] | None = None  # ensemble: one whole number per stream (default all 1)
    vote_step: float = 0.1  # ensemble: the vote's rounding step (NTIRE: 0.1)
    calibration: str = "platt"  # ensemble: platt | temperature
    c: float = 1.0  # inverse L2 strength of the logistic regressions (topk: weight decay 1e-4 / c)
    seed: int = 0

    @classmethod
    def from_options(cls, options: dict) -> HeadSettings:
        """From the command line's values: vote weights as one comma-separated string."""
        weights = options.get("vote_weights")
        return cls(**dict(options, vote_weights=tuple(weights.split(",")) if weights else None))


def _logistic(x: np.ndarray, y: np.ndarray, c: float, seed: int) -> tuple[np.ndarray, float]:
    """Logistic regression on standardised features, folded back into (w, b) on the raw ones."""
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(scaler.transform(x), y)
    w = clf.coef_[0] / scaler.scale_
    return w, float(clf.intercept_[0] - np.sum(clf.coef_[0] * scaler.mean_ / scaler.scale_))


def _fit_linear(probe: LinearProbe, x: np.ndarray, y: np.ndarray, c: float, seed: int, settings: HeadSettings) -> None:
    w, b = _logistic(x, y, c, seed)
    with torch.no_grad():
        probe.weight.copy_(torch.from_numpy(w.astype(np.float32)))
        probe.bias.fill_(b)


def _fit_topk(probe, x: np.ndarray, y: np.ndarray, c: float, seed: int, settings: HeadSettings) -> None:
    """Salience and linear layer jointly, on standardised tokens (folded back into the salience layer after)."""
    gen = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(x.astype(np.float32))
    tokens, mask = data[..., :-1], data[..., -1]
    inside = tokens[mask > 0]
    mu, sd = inside.mean(dim=0), inside.std(dim=0).clamp(min=1e-6)
    z = (tokens - mu) / sd
    target = torch.from_numpy(y.astype(np.float32))
    k = probe.k
    with torch.no_grad():
        probe.salience_weight.normal_(0.0, probe.in_features ** -0.5, generator=gen)
    keep_p = 1.0 - settings.rank_dropout * (1.0 - torch.arange(k) / max(k - 1, 1))  # rank 0 dropped most
    opt = torch.optim.Adam(probe.parameters(), lr=settings.lr, weight_decay=1e-4 / c)
    batch = min(256, len(y))
    for _ in range(settings.steps):
        pick = torch.randperm(len(y), generator=gen)[:batch]
        values = probe.slot_values(z[pick], mask[pick])  # [B, C, K]
        if settings.rank_dropout > 0:
            values = values * (torch.rand(values.shape, generator=gen) < keep_p).float() / keep_p
        if settings.random_k:
            values = values * (torch.arange(k) < torch.randint(1, k + 1, (1,), generator=gen)).float()
        logit = probe.shares(values).sum(dim=(1, 2)) + probe.bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, target[pick])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():  # s = ((t - mu) / sd) W^T + b  ==  t (W / sd)^T + (b - (W / sd) mu)
        w = probe.salience_weight / sd
        probe.salience_bias.sub_(w @ mu)
        probe.salience_weight.copy_(w)


def _fit_ensemble(probe, x: np.ndarray, y: np.ndarray, c: float, seed: int, settings: HeadSettings) -> None:
    """Per stream: logistic regression on 3/4 of the faces that have the stream's region, then its calibration
    on the other 1/4 (Platt: sigmoid(a z + c); temperature: sigmoid(z / T), fitted as a with c = 0)."""
    means, counts = x[..., :-1].astype(np.float64), x[..., -1]
    held = np.random.default_rng(seed).random(len(y)) < 0.25
    for s, name in enumerate(probe.streams):
        fit, cal = (counts[:, s] > 0) & ~held, (counts[:, s] > 0) & held
        check_classes(y[fit], f"the ensemble's '{name}' stream (fit part)")
        check_classes(y[cal], f"the ensemble's '{name}' stream (calibration part)")
        w, b = _logistic(means[fit, s], y[fit], c, seed)
        z = (means[cal, s] @ w + b)[:, None]
        calib = LogisticRegression(C=1e6, fit_intercept=settings.calibration == "platt", max_iter=5000).fit(z, y[cal])
        with torch.no_grad():
            probe.weight[s] = torch.from_numpy(w.astype(np.float32))
            probe.bias[s] = b
            probe.calib_scale[s] = float(calib.coef_[0, 0])
            probe.calib_shift[s] = float(calib.intercept_[0]) if settings.calibration == "platt" else 0.0


FITTERS = {"topk": _fit_topk, "ensemble": _fit_ensemble}
CALIBRATIONS = ("platt", "temperature")


def head_config(head: str, settings: HeadSettings) -> dict | None:
    """The probe file's head_config for `head` from fit-probe's settings (None: a single linear layer)."""
    if head == "topk":
        if settings.top_k < 1 or settings.salience_channels < 1 or not 0.0 <= settings.rank_dropout < 1.0:
            raise ValueError("topk: --top-k and --salience-channels must be at least 1, --rank-dropout in [0, 1)")
        return {"channels": settings.salience_channels, "k": settings.top_k, "rank_dropout": settings.rank_dropout,
                "random_k": settings.random_k}
    if head == "ensemble":
        if settings.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration '{settings.calibration}': use {' or '.join(CALIBRATIONS)}")
        from ..models.region import ENSEMBLE_STREAMS

        weights = settings.vote_weights or (1.0,) * len(ENSEMBLE_STREAMS)
        if len(weights) != len(ENSEMBLE_STREAMS):
            raise ValueError(f"--vote-weights: one per stream ({', '.join(ENSEMBLE_STREAMS)}), got {len(weights)}")
        return {"streams": list(ENSEMBLE_STREAMS), "vote_weights": list(check_vote_weights(weights)),
                "step": settings.vote_step, "calibration": settings.calibration}
    return None


def fit_probe(
    train: Features, head: str, region: str, label_set: str, threshold_rule: str = "eer", fitted_on: str = "",
    settings: HeadSettings = HeadSettings(),
) -> tuple[torch.nn.Module, ProbeReport]:
    """The head's probe on `train`, its threshold on the training logits and the plausibility guard.

    Faces without region tokens carry no evidence and are left out of the fit (and counted).
    """
    keep = train.region_tokens > 0 if heads.head(head).regional else np.ones(len(train.labels), bool)
    x, y = train.features[keep].astype(np.float64), train.labels[keep]
    check_classes(y, fitted_on or "training data")
    info = ProbeInfo(head=head, region=region, label_set=label_set, threshold_rule=threshold_rule, fitted_on=fitted_on,
                     guard=fit_guard(train, fitted_on), head_config=head_config(head, settings))
    width = x.shape[-1] - (1 if head in FITTERS else 0)
    torch.manual_seed(settings.seed)
    probe = make_probe(head, width, info)
    FITTERS.get(head, _fit_linear)(probe, x, y, settings.c, settings.seed, settings)
    with torch.no_grad():
        logits = probe(torch.from_numpy(x.astype(np.float32))).double().numpy()
    info.threshold = choose_threshold(logits, y, threshold_rule)
    report = ProbeReport(train_auc=float(roc_auc_score(y, logits)), used=int(keep.sum()),
                         no_region=int((~keep).sum()), threshold=info.threshold)
    return probe.eval(), report


def probe_auc(probe: LinearProbe, feats: Features) -> float:
    """AUC of the probe on a feature set; faces without region tokens score as the bias alone (as deployed)."""
    check_classes(feats.labels, "validation data")
    with torch.no_grad():
        logits = probe(torch.from_numpy(feats.features)).numpy()
    return float(roc_auc_score(feats.labels, logits))


def fit_heads(build, heads: list[str], sets: tuple, threshold: str, out: Path, features,
              settings: HeadSettings = HeadSettings()) -> list[tuple[str, ...]]:
    """fit-probe over several heads: build(head) -> a detector (its probe unused), features(detector, head, dataset)
    -> its features; sets = (train, val or None). Writes one probe per head (-HEAD suffixes when several) and returns
    the table rows (head, region, train AUC, val AUC, faces used, no region, threshold, file)."""
    from ..models.region import save_probe

    train_set, val_set = sets
    for h in heads:  # bad head options fail before any feature is extracted
        head_config(h, settings)
    rows = []
    for h in heads:
        det = build(h)
        probe, report = fit_probe(features(det, h, train_set), h, det.region_index.region, det.label_set, threshold,
                                  train_set.description, settings=settings)
        val_auc = None if val_set is None else probe_auc(probe, features(det, h, val_set))
        path = out if len(heads) == 1 else out.with_name(f"{out.stem}-{h}{out.suffix}")
        save_probe(probe, path)
        rows.append((h, det.region_index.region, f"{report.train_auc:.3f}", "-" if val_auc is None else f"{val_auc:.3f}",
                     str(report.used), str(report.no_region), f"{report.threshold:.3f} ({threshold})", str(path)))
    return rows
