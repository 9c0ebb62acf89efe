"""Fitting SDR's temporal head: on tokens whose fakes differ only in time (each frame alone is drawn from the same
distribution as a real frame), the head learns to tell them apart and the frame mean cannot."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from dfedge.train.temporal import VIEWS, ClipTokens, TemporalSettings, fit_temporal, pooled, predict, sup_con, view


def _clips(n=128, t=8, tokens=16, d=12, seed=0):
    """Real clips: the region's tokens drift slowly; fake clips: the same, plus zero-mean noise drawn afresh in every
    frame (a manipulation that disagrees with itself from frame to frame). Labels alternate."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, tokens, d, generator=g)
    patches = base + torch.cumsum(0.1 * torch.randn(n, t, 1, d, generator=g), dim=1)
    labels = np.arange(n) % 2
    patches[labels == 1] += 0.6 * torch.randn(int(labels.sum()), t, 1, d, generator=g)
    mask = torch.zeros(n, t, tokens)
    mask[..., :4] = 1.0  # the region: the first 4 tokens of a 4x4 grid
    mask[0, 2] = 0.0  # a frame without its region
    return ClipTokens(patches.half(), mask, labels, [f"v{i}" for i in range(n)], "synthetic")


def test_the_temporal_head_learns_frames_that_disagree():
    train, val = _clips(seed=0), _clips(seed=1)
    head = fit_temporal(train, TemporalSettings(steps=150, batch=32, preset="toy"))
    auc = roc_auc_score(val.labels, predict(head, val))
    assert auc > 0.9, auc
    info = head.info
    assert info.trained_on == "synthetic" and info.training["train_auc"] > 0.9 and np.isfinite(info.threshold)
    assert head.cfg.frames == 8 and head.cfg.feature_dim == 12


def test_views_perturb_only_the_spatial_pooling():
    clips = _clips(n=4)
    g = torch.Generator().manual_seed(0)
    s = TemporalSettings()
    clean = pooled(clips.patches.float(), clips.mask)
    for kind in VIEWS:
        v = view(clips.patches.float(), clips.mask, kind, s, g)
        assert v.shape == clean.shape and not torch.allclose(v, clean)
    y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])  # classes apart
    assert sup_con([a, a], y, 0.2) < sup_con([a, a], torch.tensor([0.0, 0.0, 1.0, 1.0]), 0.2)  # classes mixed


def test_settings_are_checked():
    with pytest.raises(ValueError, match="unknown view"):
        TemporalSettings.parse("dropout,crop")
    with pytest.raises(ValueError, match="give at least one view"):
        TemporalSettings.parse("none")
    assert TemporalSettings.parse("none", consistency=0.0, contrastive=0.0).views == ()
    with pytest.raises(ValueError, match="needs real and fake clips"):
        clips = _clips(n=4)
        clips.labels[:] = 0
        fit_temporal(clips, TemporalSettings(steps=1))


def test_fit_temporal_command_writes_a_head_the_kit_loads(tmp_path):
    """dfedge fit-temporal end to end on a few toy clips: the file, its training record and the AUC table."""
    from typer.testing import CliRunner

    from dfedge.cli import app
    from dfedge.models.temporal import load_temporal

    out = tmp_path / "t.safetensors"
    result = CliRunner().invoke(app, ["fit-temporal", "--data", "toyvideo:train:8:4", "--val", "toyvideo:val:6:4",
                                      "--steps", "3", "--views", "jitter", "--out", str(out)])
    assert result.exit_code == 0, result.output
    head = load_temporal(out, feature_dim=96)
    assert head.cfg.frames == 4 and head.info.trained_on == "toyvideo:train:8:4"
    assert head.info.training["views"] == ["jitter"] and head.info.training["steps"] == 3
    assert "temporal head (SDR)" in result.output and "frame mean" in result.output
    bad = CliRunner().invoke(app, ["fit-temporal", "--data", "toyvideo:train:8:4", "--views", "crop", "--out", str(out)])
    assert bad.exit_code == 2 and "unknown view(s) crop" in bad.output


def test_make_toy_writes_clips_the_video_reader_decodes(tmp_path):
    from typer.testing import CliRunner

    from dfedge.cli import app
    from dfedge.data.media import decode_frames

    result = CliRunner().invoke(app, ["make-toy", str(tmp_path / "clips"), "--video", "--count", "2"])
    assert result.exit_code == 0, result.output
    clips = sorted((tmp_path / "clips").rglob("*.mp4"))
    assert len(clips) == 2 and not list((tmp_path / "clips").rglob(".*"))  # whole files only
    n, frames, error = decode_frames(clips[0], count=16)
    assert n == 16 and len(frames) == 16 and error is None
