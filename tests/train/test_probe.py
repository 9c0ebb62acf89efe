import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dfedge.cli import app
from dfedge.train.probe import Features, choose_threshold, fit_probe


def synthetic_features(n=200, d=6, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 1, (n, d)) * rng.uniform(0.5, 3, d) + rng.normal(0, 5, d)
    x[:, 0] += 1.5 * y
    return Features(x.astype(np.float32), y, np.full(n, 4.0, np.float32), np.array([str(i) for i in range(n)]),
                    np.full((n, 2), [9.5, 6.5], np.float32))


def test_probe_is_the_logistic_regression_folded_into_one_linear_layer():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    feats = synthetic_features()
    probe, report = fit_probe(feats, "region", "mouth", "lapa")
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, random_state=0))
    ref.fit(feats.features.astype(np.float64), feats.labels)
    with torch.no_grad():
        ours = probe(torch.from_numpy(feats.features)).numpy()
    np.testing.assert_allclose(ours, ref.decision_function(feats.features.astype(np.float64)), atol=1e-4)
    assert report.train_auc > 0.75 and report.used == 200


def test_faces_without_region_tokens_are_left_out_and_counted():
    feats = synthetic_features()
    feats.region_tokens[:10] = 0
    _, report = fit_probe(feats, "region", "mouth", "lapa")
    assert report.used == 190 and report.no_region == 10


def test_thresholds_eer_and_target_false_positive_rate():
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(500), np.ones(500)].astype(int)
    logits = np.r_[rng.normal(0, 1, 500), rng.normal(2, 1, 500)]
    eer = choose_threshold(logits, y, "eer")
    fpr, fnr = (logits[y == 0] >= eer).mean(), (logits[y == 1] < eer).mean()
    assert abs(fpr - fnr) < 0.02 and 0.7 < eer < 1.3
    t = choose_threshold(logits, y, "fpr:0.05")
    assert (logits[y == 0] >= t).mean() <= 0.05
    for rule in ("youden", "fpr:2", "fpr:0", "fpr:-0.1", "fpr:nan", "fpr:x"):  # a rate is strictly between 0 and 1
        with pytest.raises(ValueError, match=f"threshold rule '{rule}': use eer, or fpr:X"):
            choose_threshold(logits, y, rule)


def test_fit_probe_refuses_one_class_input(tmp_path):
    for i in range(6):
        path = tmp_path / "real" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((448, 448, 3), i * 10, np.uint8)).save(path)
    result = CliRunner().invoke(app, ["fit-probe", "--data", str(tmp_path), "--no-cache", "--out", str(tmp_path / "p.safetensors")])
    assert result.exit_code == 2
    assert "6 real and 0 fake samples" in result.output.replace("\n", "")
    assert not (tmp_path / "p.safetensors").exists()


def token_features(n=300, tokens=20, d=5, seed=0):
    """Topk's fit input [N, T, D + 1]: noise tokens, a region of 12 tokens, and in fakes one region token (at a
    random place) that carries +4 on feature 0 — a signal a mean over the region dilutes and Top-K keeps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 1, (n, tokens, d))
    mask = np.zeros((n, tokens))
    mask[:, :12] = 1
    x[np.arange(n), rng.integers(0, 12, n), 0] += 4.0 * y
    return Features(np.concatenate([x, mask[..., None]], -1).astype(np.float32), y, np.full(n, 12.0, np.float32),
                    np.array([str(i) for i in range(n)]), np.zeros((n, 2), np.float32))


def test_topk_fit_finds_a_single_salient_token_the_region_mean_dilutes():
    from dfedge.train.probe import HeadSettings

    train, test = token_features(seed=0), token_features(seed=1)
    settings = HeadSettings(top_k=2, salience_channels=4, steps=300)
    probe, report = fit_probe(train, "topk", "all", "lapa", settings=settings)
    with torch.no_grad():
        logits = probe(torch.from_numpy(test.features)).numpy()
    from sklearn.metrics import roc_auc_score

    mean = test.features[..., :12, 0].mean(-1)  # the region mean's best feature
    assert roc_auc_score(test.labels, logits) > 0.9 > roc_auc_score(test.labels, mean) + 0.1
    assert probe.info.head_config == {"channels": 4, "k": 2, "rank_dropout": 0.0, "random_k": False}
    # the regularisers are training-only: the same graph, the same file layout
    probe2, _ = fit_probe(train, "topk", "all", "lapa", settings=HeadSettings(top_k=2, salience_channels=4, steps=150,
                                                                             rank_dropout=0.5, random_k=True))
    assert {k: v.shape for k, v in probe2.state_dict().items()} == {k: v.shape for k, v in probe.state_dict().items()}


def stream_features(n=400, d=4, seed=0):
    """The ensemble's fit input [N, S, D + 1] for its five streams: stream 0 (mouth) carries the label, scaled up
    so its raw logits are overconfident; stream 1 (eyes) is missing on a tenth of the faces."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    means = rng.normal(0, 1, (n, 5, d))
    means[:, 0, 0] += 1.5 * y
    counts = np.full((n, 5), 4.0)
    counts[:, 4] = 196
    counts[rng.random(n) < 0.1, 1] = 0
    return Features(np.concatenate([means, counts[..., None]], -1).astype(np.float32), y, np.full(n, 20.0, np.float32),
                    np.array([str(i) for i in range(n)]), np.zeros((n, 2), np.float32))


@pytest.mark.parametrize("calibration", ["platt", "temperature"])
def test_ensemble_fit_calibrates_each_stream_on_a_held_out_part(calibration):
    from dfedge.train.probe import HeadSettings

    probe, report = fit_probe(stream_features(), "ensemble", "face", "lapa",
                              settings=HeadSettings(calibration=calibration, vote_weights=("2", "1", "1", "1", "2")))
    cfg = probe.info.head_config
    assert cfg["calibration"] == calibration and cfg["vote_weights"] == [2, 1, 1, 1, 2] and cfg["step"] == 0.1
    assert report.train_auc > 0.8
    if calibration == "temperature":
        assert probe.calib_shift.abs().max() == 0
    # calibration helps on fresh faces: the calibrated mouth stream's log-loss beats its raw one
    from sklearn.metrics import log_loss

    test = stream_features(seed=3)
    means = torch.from_numpy(test.features[:, 0, :-1])
    with torch.no_grad():
        z = means @ probe.weight[0] + probe.bias[0]
        raw, cal = torch.sigmoid(z), torch.sigmoid(probe.calib_scale[0] * z + probe.calib_shift[0])
    assert log_loss(test.labels, cal.numpy()) <= log_loss(test.labels, raw.numpy()) + 1e-3


def test_fit_probe_cli_fits_the_new_heads_and_refuses_bad_head_options(tmp_path):
    out = tmp_path / "e.safetensors"
    bad = CliRunner().invoke(app, ["fit-probe", "--head", "ensemble", "--data", "toy:train:40:mixed", "--val",
                                   "toy:val:20:mixed", "--vote-weights", "2,1", "--no-cache", "--out", str(out)])
    assert bad.exit_code == 2 and "--vote-weights: one per stream" in bad.output.replace("\n", " ") and not out.exists()
    ok = CliRunner().invoke(app, ["fit-probe", "--head", "topk", "--data", "toy:train:40", "--val", "toy:val:20:mixed",
                                  "--top-k", "4", "--salience-channels", "8", "--no-cache", "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    from dfedge.models.region import load_probe

    probe = load_probe(out)
    assert probe.k == 4 and probe.info.region == "all" and probe.info.fitted_on == "toy:train:40:mixed"
