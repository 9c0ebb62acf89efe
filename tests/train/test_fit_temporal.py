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
