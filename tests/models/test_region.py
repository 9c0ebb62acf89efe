import pytest
import torch

from dfedge.models.checkpoint import CheckpointError
from dfedge.models.factory import DetectorSpec, build_detector
from dfedge.models.pooling import masked_mean_weights
from dfedge.models.region import (
    LinearProbe, ProbeInfo, RegionIndex, load_probe, region_classes, save_probe,
)
from dfedge.models.resample import apply_separable


def test_mouth_classes_per_label_set():
    assert region_classes("lapa", "mouth") == [7, 8, 9]
    assert region_classes("celebm", "mouth") == [11, 12, 13]
    assert region_classes("lapa", "eyes") == [4, 5]
    with pytest.raises(ValueError, match="unknown region 'chin'"):
        region_classes("lapa", "chin")


def soft_map(values: dict[tuple[int, int], dict[int, float]], classes: int = 11, g: int = 3) -> torch.Tensor:
    """A [1, C, g, g] map that is background except for the listed tokens' class probabilities."""
    m = torch.zeros(1, classes, g, g)
    m[0, 0] = 1.0
    for (i, j), probs in values.items():
        m[0, :, i, j] = 0.0
        for c, p in probs.items():
            m[0, c, i, j] = p
        m[0, 0, i, j] = 1.0 - sum(probs.values())
    return m


def test_membership_rule_is_region_probability_at_least_a_quarter():
    index = RegionIndex("lapa", "mouth")
    assert index.threshold == 0.25
    soft = soft_map({
        (0, 0): {7: 0.25},           # exactly a quarter: inside
        (0, 1): {7: 0.24},           # just under: outside
        (1, 1): {7: 0.1, 9: 0.15},   # upper + lower lip together: inside
        (2, 2): {1: 0.9},            # skin: outside
        (2, 0): {8: 1.0},            # inner mouth: inside
    })
    mask = index(soft).reshape(3, 3)
    expected = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=torch.float32)
    torch.testing.assert_close(mask, expected)


def test_hand_made_parser_map_pools_to_the_expected_tokens():
    """A CelebAMask-HQ map (no warp) at 112^2: each 8x8 pixel block is one token at g=14."""
    det = build_detector(DetectorSpec(preset="tiny", label_set="celebm"))
    probs = torch.zeros(1, 19, 112, 112)
    probs[:, 0] = 1.0
    probs[:, 0, 80:96, 40:72] = 0.0
    probs[:, 13, 80:96, 40:72] = 1.0  # upper lip: token rows 10-11, cols 5-8 exactly
    probs[:, 0, 96:98, 40:48] = 0.0
    probs[:, 12, 96:98, 40:48] = 1.0  # lower lip over 2 of 8 rows of token (12, 5): a quarter, inside
    probs[:, 0, 96:97, 48:56] = 0.0
    probs[:, 12, 96:97, 48:56] = 1.0  # 1 of 8 rows of token (12, 6): outside
    soft = apply_separable(probs, det.to_tokens, det.to_tokens)
    mask = det.region_index(soft).reshape(14, 14)
    expected = torch.zeros(14, 14)
    expected[10:12, 5:9] = 1
    expected[12, 5] = 1
    torch.testing.assert_close(mask, expected)


@pytest.fixture(scope="module")
def detector():
    return build_detector(DetectorSpec(preset="tiny", seed=3))


def hand_made_parse(det, mouth_rows: int):
    """Replace the parser's output (only) by a hand-made map: the last `mouth_rows` token rows are mouth."""
    def parse(image):
        soft, probs, farl = type(det).parse(det, image)
        fake = torch.zeros_like(soft)
        fake[:, 0] = 1.0
        if mouth_rows:
            fake[:, 0, -mouth_rows:] = 0.0
            fake[:, 8, -mouth_rows:] = 1.0
        return fake, probs, farl
    return parse


def test_attribution_identity_sums_to_the_logit(detector, monkeypatch):
    monkeypatch.setattr(detector, "parse", hand_made_parse(detector, 7))
    image = torch.rand(2, 3, 448, 448) * 255
    with torch.no_grad():
        out = detector(image)
    assert torch.all(out.region_tokens == 7 * 14)
    assert torch.all(out.contributions[:, :7] == 0)
    total = out.contributions.sum(dim=(1, 2)) + detector.probe.bias
    torch.testing.assert_close(total, out.logit, rtol=0, atol=1e-5)
    assert out.logit.abs().max() > 1e-3  # a real score, not the bias alone


def test_empty_region_is_reported_not_scored(detector, monkeypatch):
    from dfedge.device.verdict import judge

    monkeypatch.setattr(detector, "parse", hand_made_parse(detector, 0))
    with torch.no_grad():
        out = detector(torch.rand(1, 3, 448, 448) * 255)
    assert out.region_tokens.item() == 0
    assert torch.all(out.contributions == 0) and torch.all(out.token_mask == 0)
    torch.testing.assert_close(out.logit, detector.probe.bias.expand(1))
    verdict = judge({k: v.numpy() for k, v in out._asdict().items()}, 0.0)
    assert verdict.status == "no_region" and verdict.probability is None and verdict.decision is None


def test_masked_mean_weights_of_an_empty_mask_are_zero():
    w, count = masked_mean_weights(torch.zeros(2, 5))
    assert torch.all(w == 0) and torch.all(count == 0)


def test_probe_round_trip_and_errors(tmp_path):
    probe = LinearProbe(8, ProbeInfo(threshold=0.25, fitted_on="test"))
    with torch.no_grad():
        probe.weight.normal_()
        probe.bias.fill_(-0.5)
    path = tmp_path / "probe.safetensors"
    save_probe(probe, path)
    back = load_probe(path, dim=8)
    torch.testing.assert_close(back.weight, probe.weight)
    assert back.bias.item() == -0.5 and back.info == probe.info
    with pytest.raises(CheckpointError, match="probe has 8 inputs but the feature has 16"):
        load_probe(path, dim=16)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_probe(path)
