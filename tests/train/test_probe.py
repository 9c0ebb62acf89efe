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
