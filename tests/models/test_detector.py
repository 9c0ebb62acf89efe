import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfedge.device.graphs import OUTPUTS
from dfedge.models.detector import ALIGN_TEMPLATE
from dfedge.models.factory import DetectorSpec, build_detector, gflops, meta_detector
from dfedge.models.resample import area_matrix, unwarp_matrix

# Ops that break TFLite/CoreML conversion or make shapes dynamic; none may appear in the exported graph.
FORBIDDEN_OPS = ("arange", "meshgrid", "tensor_split", "split", "grid_sampler", "adaptive_avg_pool", "nonzero", "index.Tensor")


@pytest.fixture(scope="module")
def detector():
    return build_detector(DetectorSpec(preset="tiny", seed=0))


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(0)
    return torch.rand(2, 3, 448, 448) * 255


def test_outputs_have_exact_shapes(detector, image):
    with torch.no_grad():
        out = detector(image)
    assert out._fields == OUTPUTS
    assert out.logit.shape == out.probability.shape == out.region_tokens.shape == (2,)
    assert out.token_mask.shape == out.contributions.shape == (2, 14, 14)
    torch.testing.assert_close(out.probability, torch.sigmoid(out.logit))


def test_alignment_template_is_facers_lapa_template_at_448():
    # facer: (p / 256 - 1 + 1) * (448 - 1) / 2 for its 256-frame points (196, 226) ... (292, 360.4)
    np.testing.assert_allclose(ALIGN_TEMPLATE[0], [196 * 447 / 512, 226 * 447 / 512])
    np.testing.assert_allclose(ALIGN_TEMPLATE[4], [292 * 447 / 512, 360.4 * 447 / 512])
    assert ALIGN_TEMPLATE.shape == (5, 2)


def test_dinov3_sees_an_exact_2x_area_downsample(detector, image):
    with torch.no_grad():
        patches, _ = detector.embed(image)
        x = F.interpolate(image, size=224, mode="area") / 255.0
        mean = torch.tensor(detector.dinov3.cfg.mean).view(1, 3, 1, 1)
        std = torch.tensor(detector.dinov3.cfg.std).view(1, 3, 1, 1)
        ref, _, _ = detector.dinov3((x - mean) / std)
    torch.testing.assert_close(patches, ref, rtol=0, atol=1e-5)


def test_lapa_probabilities_are_unwarped_then_area_pooled(detector):
    expected = area_matrix(112, 14) @ unwarp_matrix(112, 0.8)
    np.testing.assert_allclose(detector.to_tokens.numpy(), expected, atol=1e-7)
    rows = expected.sum(axis=1)
    assert np.all(rows > 0.99) and np.all(rows < 1.01)  # every token fully inside the warped frame


def test_dinov3_at_448_gives_a_28_grid(image):
    det = build_detector(DetectorSpec(preset="tiny", dinov3_input=448))
    with torch.no_grad():
        out = det(image[:1])
    assert out.token_mask.shape == (1, 28, 28)


@pytest.mark.parametrize("head", ["cls", "all", "farl-region"])
def test_ablation_heads_run_with_their_feature_sizes(head, image):
    det = build_detector(DetectorSpec(preset="tiny", head=head))
    assert det.feature_dim == (64 if head != "farl-region" else det.parser.cfg.width)
    with torch.no_grad():
        out = det(image[:1])
    assert out.logit.shape == (1,)
    if head == "all":
        torch.testing.assert_close(out.contributions.sum() + det.probe.bias, out.logit[0], rtol=0, atol=1e-5)


def test_bad_input_shape_is_refused(detector):
    with pytest.raises(ValueError, match=r"expected an aligned crop \[B, 3, 448, 448\]"):
        detector(torch.zeros(1, 3, 224, 224))


def exported_ops(ep) -> set[str]:
    return {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}


@pytest.mark.slow  # the same export and checks (and more) run in test_ladder.py for the exact rung: same tiny detector, image
def test_torch_export_tiny_is_static_and_exact(detector, image):
    ep = torch.export.export(detector, (image[:1],))
    ops = exported_ops(ep)
    assert not [op for op in ops if any(bad in op for bad in FORBIDDEN_OPS)], ops
    with torch.no_grad():
        for a, b in zip(ep.module()(image[:1]), detector(image[:1])):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def analytic_gflops_full(rung: str = "exact") -> dict[str, float]:
    """Multiply-adds x 2 of the published architectures, counted by hand (independent of flop_counter), for each
    rung of the region-index ladder."""
    # DINOv3 ViT-L/16 at 224: 196 patches + 5 prefix tokens.
    n, d, hid = 201, 1024, 4096
    dino = 2 * 196 * d * 3 * 256 + 24 * (2 * n * d * 3 * d + 2 * n * d * d + 2 * 2 * n * d * hid + 2 * 2 * n * n * d)
    if rung == "distilled":  # no FaRL; Linear 1024 -> 256 -> 11 on each of the 196 tokens
        return {"dinov3": dino / 1e9, "parser backbone": 0.0, "parser head": 0.0,
                "region head": 2 * 196 * (d * 256 + 256 * 11) / 1e9}
    # FaRL ViT-B/16 at 448 (parser-224: 224): g*g patches + CLS.
    g = 14 if rung == "parser-224" else 28
    n, w = g * g + 1, 768
    vit = 2 * g * g * w * 3 * 256 + 12 * (2 * n * w * 3 * w + 2 * n * w * w + 2 * 2 * n * w * 4 * w + 2 * 2 * n * n * w)
    # FPN: ConvT 2x2 costs cin*cout*4 per input pixel. lite-head fuses at 2g: the second x4 transposed conv,
    # area-pooled by 2, is a 1x1 conv at 2g (cin*cout per output pixel).
    fuse = 2 * g if rung == "lite-head" else 4 * g
    second = 2 * 4 * w * w * (2 * g) ** 2 if fuse == 4 * g else 2 * w * w * (2 * g) ** 2
    fpn = 2 * 4 * w * w * g * g + second + 2 * 4 * w * w * g * g
    # UPerHead, C = 768, levels (4g, 2g, g, g/2), the finer ones pooled to the fusion size.
    c, top = 768, g // 2
    levels = [min(4 * g, fuse) ** 2, min(2 * g, fuse) ** 2, g * g]
    pools = sum(2 * (s * top * top + s * top * s) * w for s in (1, 2, 3, 6))  # the constant pooling matrices
    psp = sum(2 * s * s * w * c for s in (1, 2, 3, 6))
    bottleneck = 2 * top * top * (w + 4 * c) * c * 9
    lateral = 2 * sum(levels) * w * c
    fpn_convs = 2 * sum(levels) * c * c * 9
    fpn_bottleneck = 2 * fuse**2 * 4 * c * c * 9
    seg = 2 * fuse**2 * c * 11
    head = pools + psp + bottleneck + lateral + fpn_convs + fpn_bottleneck + seg
    return {"dinov3": dino / 1e9, "parser backbone": (vit + fpn) / 1e9, "parser head": head / 1e9, "region head": 0.0}


@pytest.fixture(scope="module")
def exact_full_gflops():
    return gflops(meta_detector(DetectorSpec(preset="full")))


def test_full_size_gflops_match_an_independent_count(exact_full_gflops):
    counted = exact_full_gflops
    for name, value in analytic_gflops_full().items():
        assert counted[name] == pytest.approx(value, rel=1e-6), name
    parser_share = (counted["parser backbone"] + counted["parser head"]) / counted["total"]
    assert 0.87 < parser_share < 0.89


@pytest.mark.parametrize("rung", ["lite-head", "parser-224", "distilled"])
def test_every_rung_gflops_match_an_independent_count(rung, exact_full_gflops):
    counted = gflops(meta_detector(DetectorSpec(preset="full", region_index=rung)))
    for name, value in analytic_gflops_full(rung).items():
        assert counted[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    exact = exact_full_gflops["total"]
    assert counted["total"] < exact / 1.9  # every rung at least halves the fused graph
    if rung == "distilled":
        assert exact / counted["total"] >= 7.0  # the bar: >= 7x fewer FLOPs than exact at full size


@pytest.mark.fullsize
def test_torch_export_full_size_is_static():
    det = build_detector(DetectorSpec(preset="full"))
    image = torch.rand(1, 3, 448, 448) * 255
    ep = torch.export.export(det, (image,))
    ops = exported_ops(ep)
    assert not [op for op in ops if any(bad in op for bad in FORBIDDEN_OPS)], ops
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(image).logit, det(image).logit, rtol=0, atol=1e-5)
