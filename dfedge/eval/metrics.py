"""Metrics for one detector on a labelled set, and for a compressed artifact against its reference.

Conventions: labels [N] are 1 = fake, 0 = real; scores [N] are logits or probabilities, higher = more fake.
AUC, AP and the ROC come from scikit-learn; DeLong's test for two correlated AUCs is implemented here (no
maintained package provides it). Every function checks its inputs and raises ValueError with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, pearsonr, rankdata, spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

_BOOT_CHUNK_ELEMENTS = 4_000_000  # bootstrap resamples are ranked in blocks of about this many scores


@dataclass(frozen=True)
class BinaryMetrics:
    auc: float
    ap: float
    eer: float  # equal error rate, where FPR = FNR on the ROC (linear interpolation between its points)
    eer_threshold: float  # score at the first ROC point with FPR >= FNR
    accuracy: float  # of (score >= threshold) against the labels
    threshold: float
    n: int
    positives: int  # fakes


@dataclass(frozen=True)
class DeLong:
    auc_a: float
    auc_b: float
    delta: float  # auc_b - auc_a
    se: float  # standard error of delta
    z: float
    p_value: float  # two-sided, H0: the two AUCs are equal


@dataclass(frozen=True)
class Agreement:
    max_abs: float  # max |art - ref|
    mean_abs: float
    pearson: float
    spearman: float
    flip_rate: float  # fraction of samples whose decision at the threshold differs
    n: int


@dataclass(frozen=True)
class MaskAgreement:
    token_agreement: float  # fraction of tokens with the same membership
    exact_faces: float  # fraction of faces whose masks are identical
    mean_iou: float  # per-face IoU (both empty = 1.0), averaged
    count_drift_mean: float  # mean |art count - ref count| per face
    count_drift_max: int


# ---- input checks -------------------------------------------------------------------------------------------


def _shaped(name: str, x, ndim: int, layout: str) -> np.ndarray:
    """x as an array of `ndim` dimensions with at least one row."""
    a = np.asarray(x)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {layout}, got shape {a.shape}")
    if len(a) == 0:
        raise ValueError(f"{name} is empty")
    return a


def _vector(name: str, x) -> np.ndarray:
    """A finite 1-D float64 array [N] with at least one element."""
    a = _shaped(name, x, 1, "1-D")
    try:
        a = a.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}") from None
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _labels(x) -> np.ndarray:
    """Labels [N] as int64 0/1."""
    y = _vector("labels", x)
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (real) or 1 (fake), got values {np.unique(y)[:5].tolist()}")
    return y.astype(np.int64)


def _same_length(**arrays: np.ndarray) -> None:
    (first, a), *rest = arrays.items()
    for name, b in rest:
        if len(b) != len(a):
            raise ValueError(f"{first} and {name} have different lengths ({len(a)} vs {len(b)})")


def _both_classes(y: np.ndarray, at_least: int = 1) -> None:
    fakes = int(y.sum())
    if min(fakes, len(y) - fakes) < at_least:
        need = "both classes" if at_least == 1 else f"at least {at_least} samples of each class"
        raise ValueError(f"AUC needs {need} (got {fakes} fake, {len(y) - fakes} real)")


def _binary(labels, **scores) -> tuple[np.ndarray, list[np.ndarray]]:
    y = _labels(labels)
    s = [_vector(name, v) for name, v in scores.items()]
    _same_length(labels=y, **dict(zip(scores, s)))
    return y, s


# ---- single-model metrics -----------------------------------------------------------------------------------


def _eer(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    gap = fpr - (1.0 - tpr)  # FPR - FNR: -1 at the first ROC point, +1 at the last, non-decreasing between
    i = int(np.argmax(gap >= 0))  # >= 1, so thresholds[i] is a finite score
    if gap[i] == 0:
        return float(fpr[i]), float(thresholds[i])
    t = -gap[i - 1] / (gap[i] - gap[i - 1])  # where the segment from point i-1 to point i crosses FPR = FNR
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1])), float(thresholds[i])


def binary_metrics(labels, scores, threshold: float) -> BinaryMetrics:
    """AUC, AP, EER and accuracy at `threshold` of scores [N] against labels [N] (1 = fake)."""
    y, (s,) = _binary(labels, scores=scores)
    _both_classes(y)
    eer, eer_threshold = _eer(y, s)
    return BinaryMetrics(
        auc=float(roc_auc_score(y, s)), ap=float(average_precision_score(y, s)), eer=eer,
        eer_threshold=eer_threshold, accuracy=float(np.mean((s >= threshold) == (y == 1))),
        threshold=float(threshold), n=len(y), positives=int(y.sum()),
    )


# ---- DeLong -------------------------------------------------------------------------------------------------


def _structural_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scores [K, N] -> AUC [K], V10 [K, m] (one per fake), V01 [K, n] (one per real).

    Fast DeLong of Sun & Xu (2014, IEEE SPL 21:1389): the placement values come from midranks (ties count 1/2)
    within the fakes, within the reals and over both, O(N log N) instead of the pairwise O(m n) of DeLong et al.
    (1988); V10_i is the fraction of reals scored below fake i, V01_j the fraction of fakes scored above real j.
    """
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    rank_all = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    rank_pos, rank_neg = rankdata(pos, axis=1), rankdata(neg, axis=1)
    v10 = (rank_all[:, :m] - rank_pos) / n
    v01 = 1.0 - (rank_all[:, m:] - rank_neg) / m
    auc = v10.mean(axis=1)
    return auc, v10, v01


def delong_auc_variance(labels, scores) -> tuple[float, float]:
    """(AUC, DeLong variance of the AUC) of scores [N] against labels [N]."""
    y, (s,) = _binary(labels, scores=scores)
    _both_classes(y, at_least=2)
    auc, v10, v01 = _structural_components(y, s[None])
    variance = v10[0].var(ddof=1) / v10.shape[1] + v01[0].var(ddof=1) / v01.shape[1]
    return float(auc[0]), float(variance)


def delong(labels, scores_a, scores_b) -> DeLong:
    """DeLong's test for two correlated AUCs: scores_a [N] and scores_b [N] of the same samples, labels [N]."""
    y, (a, b) = _binary(labels, scores_a=scores_a, scores_b=scores_b)
    _both_classes(y, at_least=2)
    auc, v10, v01 = _structural_components(y, np.stack([a, b]))
    # Var(auc_b - auc_a) = S10[a,a] + S10[b,b] - 2 S10[a,b] over m, plus the same for S01 over n; taking the variance
    # of the differenced components gives the same number and exactly 0 when the two score sets rank alike.
    d10, d01 = v10[1] - v10[0], v01[1] - v01[0]
    variance = d10.var(ddof=1) / len(d10) + d01.var(ddof=1) / len(d01)
    delta = float(auc[1] - auc[0])
    se = float(np.sqrt(max(variance, 0.0)))
    if se == 0.0:  # both rankings degenerate alike: no difference -> p = 1, a difference with no spread -> p = 0
        z = 0.0 if delta == 0.0 else float(np.copysign(np.inf, delta))
    else:
        z = delta / se
    return DeLong(auc_a=float(auc[0]), auc_b=float(auc[1]), delta=delta, se=se, z=z,
                  p_value=float(2.0 * norm.sf(abs(z))))  # z = 0 gives exactly 1.0


# ---- bootstrap ----------------------------------------------------------------------------------------------


def _auc_rows(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC per row: labels [B, N], scores [B, N] -> [B] (every row has both classes)."""
    ranks = rankdata(s, axis=1)
    m = y.sum(axis=1)
    n = y.shape[1] - m
    return ((ranks * y).sum(axis=1) - m * (m + 1) / 2.0) / (m * n)


def bootstrap_ci(labels, scores_a, scores_b=None, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile CI of AUC(scores_a), or with scores_b of the paired AUC(b) - AUC(a) on the same resamples.

    Resamples of N indices with replacement that hold a single class are redrawn; the result depends only on
    the inputs and `seed`.
    """
    if scores_b is None:
        y, (a,) = _binary(labels, scores_a=scores_a)
        b = None
    else:
        y, (a, b) = _binary(labels, scores_a=scores_a, scores_b=scores_b)
    _both_classes(y)
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    n_boot, size = int(n_boot), len(y)
    values: list[np.ndarray] = []
    drawn = kept = 0
    while kept < n_boot:
        if drawn > 100 * n_boot:
            raise ValueError(f"bootstrap: almost every resample has a single class ({int(y.sum())} fake of {size})")
        chunk = max(1, min(n_boot - kept + 16, _BOOT_CHUNK_ELEMENTS // size))
        idx = rng.integers(0, size, size=(chunk, size))  # [B, N]
        drawn += chunk
        yb = y[idx]
        fakes = yb.sum(axis=1)
        ok = (fakes > 0) & (fakes < size)
        idx, yb = idx[ok], yb[ok]
        v = _auc_rows(yb, a[idx])
        if b is not None:
            v = _auc_rows(yb, b[idx]) - v
        values.append(v)
        kept += len(v)
    stats = np.concatenate(values)[:n_boot]
    lo, hi = np.quantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


# ---- video level --------------------------------------------------------------------------------------------


def video_level(video_ids, labels, probabilities) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames -> videos: (unique ids [V] in first-seen order, label [V], mean probability [V])."""
    ids = _shaped("video_ids", video_ids, 1, "1-D")
    y, (p,) = _binary(labels, probabilities=probabilities)
    _same_length(video_ids=ids, labels=y)
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(first)  # sorted-unique position -> first-seen position
    video = np.empty_like(order)
    video[order] = np.arange(len(order))
    video = video[inverse.reshape(-1)]  # [N] first-seen video index of each frame
    count = np.bincount(video)
    fakes = np.bincount(video, weights=y)
    mixed = np.flatnonzero((fakes > 0) & (fakes < count))
    if len(mixed):
        raise ValueError(f"video {str(ids[first[order[mixed[0]]]])!r} has frames labelled both real and fake")
    return ids[first[order]], (fakes > 0).astype(np.int64), np.bincount(video, weights=p) / count


# ---- artifact vs reference ----------------------------------------------------------------------------------


def _correlation(fn, ref: np.ndarray, art: np.ndarray) -> float:
    if np.array_equal(ref, art):
        return 1.0
    if len(ref) < 2 or np.ptp(ref) == 0 or np.ptp(art) == 0:
        return float("nan")  # undefined for a constant array
    return float(fn(ref, art)[0])


def score_agreement(ref_logits, art_logits, threshold: float, art_threshold: float | None = None) -> Agreement:
    """How closely artifact logits [N] follow the reference logits [N], and how many decisions flip: the reference's
    at `threshold` against the artifact's at its own `art_threshold` (default: the same)."""
    ref, art = _vector("ref_logits", ref_logits), _vector("art_logits", art_logits)
    _same_length(ref_logits=ref, art_logits=art)
    diff = np.abs(art - ref)
    return Agreement(
        max_abs=float(diff.max()), mean_abs=float(diff.mean()), pearson=_correlation(pearsonr, ref, art),
        spearman=_correlation(spearmanr, ref, art),
        flip_rate=float(np.mean((ref >= threshold) != (art >= (threshold if art_threshold is None else art_threshold)))),
        n=len(ref),
    )


def _masks(name: str, x) -> np.ndarray:
    a = _shaped(name, x, 3, "[N, g, g]")
    if a.dtype != bool and not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must be boolean or 0/1")
    return a.astype(bool)


def mask_agreement(ref_masks, art_masks) -> MaskAgreement:
    """Region-membership agreement of token masks [N, g, g] (True = token in the region)."""
    ref, art = _masks("ref_masks", ref_masks), _masks("art_masks", art_masks)
    if ref.shape != art.shape:
        raise ValueError(f"ref_masks and art_masks have different shapes ({ref.shape} vs {art.shape})")
    same = ref == art  # [N, g, g]
    inter = (ref & art).sum(axis=(1, 2))
    union = (ref | art).sum(axis=(1, 2))
    iou = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    drift = np.abs(art.sum(axis=(1, 2)).astype(np.int64) - ref.sum(axis=(1, 2)))
    return MaskAgreement(
        token_agreement=float(same.mean()), exact_faces=float(same.all(axis=(1, 2)).mean()),
        mean_iou=float(iou.mean()), count_drift_mean=float(drift.mean()), count_drift_max=int(drift.max()),
    )
