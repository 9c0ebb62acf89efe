import pytest
import torch

from dfedge.models.checkpoint import CheckpointError
from dfedge.models.temporal import TemporalConfig, load_temporal, make_temporal, pack, save_temporal


def _frames(b=3, t=16, d=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    valid = (torch.rand(b, t, generator=g) > 0.3).float()
    valid[:, 0] = 1
    return torch.randn(b, t, d, generator=g), valid


def test_shapes_and_outputs():
    head = make_temporal(96)
    feats, valid = _frames()
    out = head(pack(feats, valid))
    assert out.logit.shape == (3,) and out.probability.shape == (3,)
    torch.testing.assert_close(out.probability, torch.sigmoid(out.logit))
    torch.testing.assert_close(out.valid_frames, valid.sum(1))
    assert head.input_shape == (1, 16, 97)
    with pytest.raises(ValueError, match=r"expected frames \[B, 16, 97\]"):
        head(torch.zeros(1, 8, 97))


@torch.no_grad()
def test_invalid_frames_do_not_count():
    """What an invalid frame holds never reaches the logit: not attended, not pooled, no difference taken across it."""
    torch.manual_seed(0)
    head = make_temporal(96)
    feats, valid = _frames()
    x = pack(feats, valid)
    noisy = x.clone()
    noisy[..., :96] += (1 - valid).unsqueeze(-1) * 100 * torch.randn_like(feats)
    torch.testing.assert_close(head(noisy).logit, head(x).logit, rtol=0, atol=1e-5)
    # ... while a valid frame's feature does
    moved = x.clone()
    moved[0, 0, :96] += torch.randn(96)  # (not a constant shift: LayerNorm removes those)
    assert abs(float(head(moved).logit[0] - head(x).logit[0])) > 1e-6


def test_frame_order_matters():
    """A temporal head, not a bag of frames: reversing the window changes the score (positions, differences)."""
    torch.manual_seed(0)
    head = make_temporal(96)
    feats, _ = _frames(b=2)
    x = pack(feats, torch.ones(2, 16))
    assert (head(x).logit - head(x.flip(1)).logit).abs().max() > 1e-4


def test_no_valid_frame_gives_zero_count():
    head = make_temporal(96)
    out = head(pack(torch.randn(1, 16, 96), torch.zeros(1, 16)))
    assert float(out.valid_frames[0]) == 0 and torch.isfinite(out.logit).all()


def test_save_load_round_trip_and_refusals(tmp_path):
    torch.manual_seed(1)
    head = make_temporal(96, frames=8)
    path = save_temporal(head, tmp_path / "t.safetensors")
    back = load_temporal(path, feature_dim=96)
    x = pack(*_frames(t=8))
    torch.testing.assert_close(back(x).logit, head(x).logit)
    assert back.cfg == head.cfg
    with pytest.raises(CheckpointError, match="reads 96-wide frame features; the frame encoder gives 1024"):
        load_temporal(path, feature_dim=1024)
    from dfedge.models.region import LinearProbe, save_probe
    with pytest.raises(CheckpointError, match="not a temporal head file"):
        load_temporal(save_probe(LinearProbe(96), tmp_path / "probe.safetensors"))
    with pytest.raises(CheckpointError):
        load_temporal(path, sha256="0" * 64)


def test_bad_config():
    with pytest.raises(ValueError, match="width divisible by heads"):
        TemporalConfig(feature_dim=96, width=30, heads=4)
    with pytest.raises(ValueError, match="unknown temporal preset"):
        make_temporal(96, "huge")
