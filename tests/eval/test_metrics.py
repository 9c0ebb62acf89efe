"""Metrics: DeLong against the 1988 pairwise definition and pROC, bootstrap CIs, video-level aggregation,
binary metrics on hand-computed cases, score and mask agreement, input checks."""

import itertools
import warnings

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from dfedge.eval.metrics import (
    bootstrap_ci, binary_metrics, delong, delong_auc_variance, mask_agreement, score_agreement, video_level,
)


def pairwise_delong(labels, scores_a, scores_b):
    """DeLong, DeLong & Clarke-Pearson (1988), written out: structural components from every (fake, real) pair,
    psi = 1 if the fake scores higher, 0.5 on a tie, 0 otherwise. Returns aucs, variances, delta, se, z, p."""
    fakes = [i for i, y in enumerate(labels) if y == 1]
    reals = [j for j, y in enumerate(labels) if y == 0]
    m, n = len(fakes), len(reals)

    def psi(x, y):
        return 1.0 if x > y else 0.5 if x == y else 0.0

    v10, v01 = [], []  # per score set: one value per fake, one per real
    for s in (scores_a, scores_b):
        v10.append([sum(psi(s[i], s[j]) for j in reals) / n for i in fakes])
        v01.append([sum(psi(s[i], s[j]) for i in fakes) / m for j in reals])

    def cov(u, v):
        mu, mv = sum(u) / len(u), sum(v) / len(v)
        return sum((a - mu) * (b - mv) for a, b in zip(u, v)) / (len(u) - 1)

    S = [[cov(v10[k], v10[l]) / m + cov(v01[k], v01[l]) / n for l in range(2)] for k in range(2)]
    aucs = [sum(v) / m for v in v10]
    delta = aucs[1] - aucs[0]
    se = (S[0][0] + S[1][1] - 2 * S[0][1]) ** 0.5
    z = delta / se
    return {"auc_a": aucs[0], "auc_b": aucs[1], "var_a": S[0][0], "var_b": S[1][1], "delta": delta, "se": se,
            "z": z, "p_value": 2 * norm.sf(abs(z))}


def tied_dataset(n=40, seed=7):
    """Scores rounded to halves: many ties within and across classes."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.45).astype(int)
    a = np.round(rng.normal(0.8 * y, 1.0) * 2) / 2
    b = np.round((0.6 * a + rng.normal(0.3 * y, 0.8)) * 2) / 2
    return y, a, b


# pROC's aSAH data (113 patients, Turck et al. 2010): outcome (P = poor, G = good), WFNS grade, S100B.
ASAH_OUTCOME = (
    "GGGGPPGPGGPGPPGGPGPPPGPGGGGGGGGGPGGPPGPPGGGGGGGGGPPGGGPGGGPGPGGPPPGPPGPPPPGGGPPGPGGGGGGPGGGGGGGGGGGGPPPPPPGGG"
    "PGGG"
)
ASAH_WFNS = (
    "1111325412525512522521111212113421454142551124112552125122215112521452441412142123242145115422111312522555244"
    "5111"
)
ASAH_S100B = """
.13 .14 .1 .04 .13 .1 .47 .16 .18 .1 .12 .1 .44 .71 .04 .08 .49 .04 .07 .33 .09 .09 .07 .11 .07 .17 .07 .11 .13
.19 .05 .16 .41 .14 .34 .35 .48 .09 .96 .25 .5 .46 .16 .07 .43 .45 .11 .08 .09 .86 .52 .08 .06 .13 2.07 .1 .14 .15
.07 .06 .77 .05 .09 .3 .03 .09 .04 .23 .7 .09 .27 .71 .08 .26 .08 .16 .09 .13 .1 .08 .11 .33 .11 .28 .07 .1 .32
.22 .07 .05 .24 .38 .1 .15 .08 .14 .1 .07 .04 .19 .56 .14 .58 .32 .82 .74 .15 .47 .17 .44 .15 .5 .48
"""


def asah():
    y = np.array([c == "P" for c in ASAH_OUTCOME], dtype=int)
    wfns = np.array([float(c) for c in ASAH_WFNS])
    s100b = np.array([float(v) for v in ASAH_S100B.split()])
    assert len(y) == len(wfns) == len(s100b) == 113 and y.sum() == 41
    return y, wfns, s100b


# ---- DeLong -------------------------------------------------------------------------------------------------


def test_delong_matches_the_pairwise_1988_definition_with_ties():
    y, a, b = tied_dataset()
    for s in (a, b):  # the dataset really has fake-real ties
        assert np.isin(s[y == 1], s[y == 0]).sum() >= 5
    ref = pairwise_delong(y.tolist(), a.tolist(), b.tolist())
    got = delong(y, a, b)
    for key in ("auc_a", "auc_b", "delta", "se", "z", "p_value"):
        assert getattr(got, key) == pytest.approx(ref[key], abs=1e-6), key
    assert got.auc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert delong_auc_variance(y, a) == pytest.approx((ref["auc_a"], ref["var_a"]), abs=1e-9)
    assert delong_auc_variance(y, b) == pytest.approx((ref["auc_b"], ref["var_b"]), abs=1e-9)
    swapped = delong(y, b, a)
    assert swapped.delta == pytest.approx(-got.delta) and swapped.p_value == pytest.approx(got.p_value)


def test_delong_reproduces_proc_roc_test_on_asah():
    # pROC's own test suite (tests/testthat): roc.test(r.wfns, r.s100b) gives Z = 2.20898359144091,
    # p = 0.0271757822291882 (printed "Z = 2.209, p-value = 0.02718", AUCs 0.8237 and 0.7314); var(r.wfns) =
    # 0.00146991470882363, var(r.s100b) = 0.00266868245717244. Our delta is b - a, so b = wfns gives the same sign.
    y, wfns, s100b = asah()
    got = delong(y, s100b, wfns)
    assert got.z == pytest.approx(2.20898359144091, rel=1e-9)
    assert got.p_value == pytest.approx(0.0271757822291882, rel=1e-9)
    assert (round(got.auc_b, 4), round(got.auc_a, 4)) == (0.8237, 0.7314)
    assert delong_auc_variance(y, wfns)[1] == pytest.approx(0.00146991470882363, rel=1e-9)
    assert delong_auc_variance(y, s100b)[1] == pytest.approx(0.00266868245717244, rel=1e-9)


def test_delong_identical_scores_give_p_exactly_one():
    y, a, _ = tied_dataset()
    for scores in (a, np.zeros(len(a))):  # an informative score and a constant one (both variances 0)
        d = delong(y, scores, scores.copy())
        assert (d.delta, d.se, d.z, d.p_value) == (0.0, 0.0, 0.0, 1.0)
    # DeLong depends on ranks only: a monotone transform is the same curve
    d = delong(y, a, np.exp(a) * 3 - 1)
    assert (d.delta, d.se, d.p_value) == (0.0, 0.0, 1.0)


def test_delong_flags_a_strongly_perturbed_copy_and_not_a_slightly_perturbed_one():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 200)
    ref = rng.normal(1.5 * y, 1.0)  # AUC about 0.85
    strong = ref + rng.normal(0, 1.5, len(y))
    slight = ref + rng.normal(0, 0.01, len(y))
    d = delong(y, ref, strong)
    assert d.delta < -0.05 and d.z < 0 and d.p_value < 0.05
    assert delong(y, ref, slight).p_value > 0.05


def test_delong_difference_without_spread_has_p_zero():
    y = np.array([0, 0, 0, 1, 1, 1])
    d = delong(y, np.zeros(6), y * 1.0)  # constant (AUC 0.5) vs perfect (AUC 1): every component is constant
    assert d.delta == 0.5 and d.se == 0.0 and d.z == np.inf and d.p_value == 0.0


# ---- bootstrap ----------------------------------------------------------------------------------------------


def test_bootstrap_ci_contains_the_estimate_and_is_deterministic_per_seed():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 200)
    a = rng.normal(1.2 * y, 1.0)
    b = a + rng.normal(0, 0.8, len(y))
    auc_a, var_a = delong_auc_variance(y, a)
    lo, hi = bootstrap_ci(y, a, seed=3)
    assert lo < auc_a < hi
    # the percentile interval and the DeLong normal interval agree in width
    assert (hi - lo) == pytest.approx(2 * 1.96 * var_a**0.5, rel=0.25)
    d = delong(y, a, b).delta
    dlo, dhi = bootstrap_ci(y, a, b, seed=3)
    assert dlo < d < dhi and dhi < 0.0  # added noise lowers the AUC on (nearly) every resample
    assert bootstrap_ci(y, a, seed=3) == (lo, hi) and bootstrap_ci(y, a, b, seed=3) == (dlo, dhi)
    assert bootstrap_ci(y, a, seed=4) != (lo, hi)
    assert bootstrap_ci(y, a, a.copy(), n_boot=50) == (0.0, 0.0)


def test_bootstrap_ci_redraws_single_class_resamples():
    y = np.array([0] * 9 + [1])  # about 35% of resamples hold no fake
    s = np.arange(10.0)
    lo, hi = bootstrap_ci(y, s, n_boot=200, seed=0)
    assert lo == hi == 1.0  # the one fake outscores every real in every valid resample
    lo, hi = bootstrap_ci(y, -s, s, n_boot=200, seed=0)
    assert lo == hi == 1.0  # AUC 1 - AUC 0


# ---- video level --------------------------------------------------------------------------------------------


def test_video_level_means_per_video_in_first_seen_order():
    vids = np.array(["v2", "v1", "v2", "v3", "v1", "v2"])
    y = np.array([1, 0, 1, 1, 0, 1])
    p = np.array([0.9, 0.2, 0.6, 0.4, 0.4, 0.3])
    ids, labels, means = video_level(vids, y, p)
    assert ids.tolist() == ["v2", "v1", "v3"]
    assert labels.tolist() == [1, 0, 1]
    assert means == pytest.approx([0.6, 0.3, 0.4])


def test_video_level_rejects_a_video_with_mixed_labels():
    with pytest.raises(ValueError, match="video 'b'"):
        video_level(["a", "b", "a", "b"], [0, 1, 0, 0], [0.1, 0.9, 0.2, 0.8])


# ---- binary metrics -----------------------------------------------------------------------------------------


def test_binary_metrics_match_hand_computed_values():
    # scores 1..8; fakes at 3, 5, 6, 7, 8; reals at 1, 2, 4.
    y = np.array([0, 0, 1, 0, 1, 1, 1, 1])
    s = np.arange(1.0, 9.0)
    m = binary_metrics(y, s, threshold=4.5)
    assert m.auc == pytest.approx(14 / 15)  # 15 pairs; only (fake 3, real 4) is misordered
    assert m.ap == pytest.approx((1 + 1 + 1 + 1 + 5 / 6) / 5)
    # ROC points (FPR, FNR): score 5 -> (0, 0.2), score 4 -> (1/3, 0.2): FPR = FNR = 0.2 on that segment
    assert m.eer == pytest.approx(0.2) and m.eer_threshold == 4.0
    assert m.accuracy == 7 / 8 and (m.n, m.positives, m.threshold) == (8, 5, 4.5)
    assert binary_metrics(y, s, threshold=4.0).accuracy == 6 / 8  # score >= threshold counts as fake

    m = binary_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], threshold=0.5)
    assert (m.auc, m.eer, m.eer_threshold, m.accuracy) == (0.75, 0.5, 0.6, 0.5)
    assert m.ap == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_binary_metrics_perfect_separation_has_zero_eer():
    m = binary_metrics([0, 0, 0, 1, 1], [-3.0, -1.0, 0.5, 2.0, 4.0], threshold=0.0)
    assert (m.auc, m.ap, m.eer) == (1.0, 1.0, 0.0)
    assert m.eer_threshold == 2.0 and m.accuracy == 0.8


# ---- agreement ----------------------------------------------------------------------------------------------


def test_score_agreement_counts_decision_flips():
    ref = np.array([-2.0, -0.5, 0.1, 0.5, 3.0, 0.0])
    art = np.array([-2.0, 0.2, -0.1, 0.5, 3.5, -1e-6])
    g = score_agreement(ref, art, threshold=0.0)
    assert g.flip_rate == pytest.approx(3 / 6)  # -0.5 -> 0.2, 0.1 -> -0.1, and 0.0 (>= 0) -> -1e-6
    assert g.max_abs == pytest.approx(0.7) and g.mean_abs == pytest.approx((0.7 + 0.2 + 0.5 + 1e-6) / 6)
    assert g.pearson == pytest.approx(np.corrcoef(ref, art)[0, 1]) and g.n == 6
    assert score_agreement(ref, art, threshold=10.0).flip_rate == 0.0


def test_score_agreement_is_nan_safe():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = score_agreement(np.full(5, 0.3), np.full(5, 0.3), threshold=0.0)
        assert (same.pearson, same.spearman, same.max_abs, same.flip_rate) == (1.0, 1.0, 0.0, 0.0)
        one_constant = score_agreement(np.full(4, 0.3), np.arange(4.0), threshold=0.0)
        assert np.isnan(one_constant.pearson) and np.isnan(one_constant.spearman)
    ranks_kept = score_agreement(np.arange(6.0), np.arange(6.0) ** 3, threshold=2.0)
    assert ranks_kept.spearman == pytest.approx(1.0) and ranks_kept.pearson < 1.0


def test_mask_agreement_on_hand_made_masks():
    ref = np.zeros((4, 3, 3), dtype=bool)
    art = np.zeros((4, 3, 3), dtype=bool)
    ref[0, 1, 1] = ref[0, 1, 2] = art[0, 1, 1] = art[0, 1, 2] = True  # identical
    for r, c in ((0, 0), (0, 1)):
        ref[1, r, c] = True
    for r, c in ((0, 1), (1, 1), (2, 2), (2, 0)):
        art[1, r, c] = True  # 1 shared, 4 tokens differ, union 5, count 2 -> 4
    art[3, 2, 2] = True  # face 2 empty in both; face 3 gains one token
    m = mask_agreement(ref, art)
    assert m.token_agreement == pytest.approx(31 / 36)
    assert m.exact_faces == 0.5
    assert m.mean_iou == pytest.approx((1 + 1 / 5 + 1 + 0) / 4)
    assert (m.count_drift_mean, m.count_drift_max) == (0.75, 2)
    assert mask_agreement(ref.astype(np.uint8), art.astype(np.int64)) == m


# ---- input checks -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, message", [
    (lambda: binary_metrics([0, 1, 1], [0.1, 0.2], 0.5), "different lengths"),
    (lambda: binary_metrics([1, 1, 1], [0.1, 0.2, 0.3], 0.5), "both classes"),
    (lambda: binary_metrics([0, 1, 2], [0.1, 0.2, 0.3], 0.5), "labels must be 0"),
    (lambda: binary_metrics([0, 1], [[0.1, 0.2]], 0.5), "1-D"),
    (lambda: binary_metrics([0, 1], [0.1, np.nan], 0.5), "NaN"),
    (lambda: delong([0, 1, 1, 0], [1, 2, 3, 4], [1, 2, 3]), "scores_b"),
    (lambda: delong([0, 1, 1], [1, 2, 3], [1, 2, 3]), "at least 2"),
    (lambda: delong_auc_variance([0, 0], [1, 2]), "both classes|at least 2"),
    (lambda: bootstrap_ci([0, 1], [1, 2], n_boot=0), "n_boot"),
    (lambda: bootstrap_ci([0, 1], [1, 2], alpha=1.5), "alpha"),
    (lambda: video_level(["a"], [0, 1], [0.1, 0.2]), "different lengths"),
    (lambda: score_agreement([1.0, 2.0], [1.0], 0.0), "different lengths"),
    (lambda: mask_agreement(np.zeros((2, 3, 3)), np.zeros((2, 4, 4))), "different shapes"),
    (lambda: mask_agreement(np.zeros((2, 9)), np.zeros((2, 9))), r"\[N, g, g\]"),
    (lambda: mask_agreement(np.full((1, 2, 2), 0.5), np.zeros((1, 2, 2))), "0/1"),
])
def test_invalid_inputs_raise_a_named_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_delong_matches_the_pairwise_definition_on_every_labelling_of_six_tied_samples():
    s_a, s_b = np.array([0.0, 0.0, 1.0, 1.0, 2.0, 3.0]), np.array([0.0, 1.0, 1.0, 2.0, 2.0, 2.0])
    checked = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for y in itertools.product([0, 1], repeat=6):
            if not 2 <= sum(y) <= 4:
                continue
            got = delong(y, s_a, s_b)
            S = pairwise_delong(y, s_a.tolist(), s_b.tolist()) if got.se > 0 else None
            if S is None:
                assert got.p_value in (0.0, 1.0)
                continue
            assert (got.auc_a, got.auc_b, got.se, got.p_value) == pytest.approx(
                (S["auc_a"], S["auc_b"], S["se"], S["p_value"]), abs=1e-9)
            checked += 1
    assert checked > 30
