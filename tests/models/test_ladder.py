"""The region-index ladder: each rung is the same detector (same outputs, static graph, same weights where it
says so) with a cheaper way of deciding which tokens are the region."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dataclasses import replace

from dfedge.models import farl as farl_lib
from dfedge.models.checkpoint import CheckpointError
from dfedge.models.distilled import DistilledRegionHead, RegionHeadConfig, load_region_head
from dfedge.models.factory import DetectorSpec, build_detector
from dfedge.models.ladder import RUNGS, rung
from dfedge.models.resample import area_matrix, warp_matrix
from dfedge.train.distill import save_head

from test_detector import FORBIDDEN_OPS, exported_ops

LADDER = list(RUNGS)


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(0)
    return torch.rand(2, 3, 448, 448) * 255


@pytest.fixture(scope="module")
def parser():
    torch.manual_seed(0)
    p = farl_lib.FarlParser(farl_lib.PRESETS["tiny"])
    with torch.no_grad():  # non-trivial BN statistics, so the folded branch is checked through BN and GELU
        for m in p.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return p.eval()


@pytest.mark.parametrize("fuse", [56, 28])
def test_lite_head_pyramid_is_the_area_pooled_published_pyramid(parser, fuse):
    lite = farl_lib.derive_parser(parser, replace(parser.cfg, fuse_size=fuse))
    x = torch.rand(1, 3, 448, 448)
    with torch.no_grad():
        full, _ = parser.backbone(x)
        pooled, _ = lite.backbone(x)
        logits = lite(x)
    for level, (a, b) in enumerate(zip(full, pooled)):
        expected = F.adaptive_avg_pool2d(a, min(a.shape[-1], fuse))
        torch.testing.assert_close(b, expected, rtol=1e-4, atol=1e-5, msg=f"level {level}")
    assert logits.shape[-2:] == (fuse, fuse)
    # same weights: nothing but the folded transposed convs differs
    same = {k for k in parser.state_dict() if not k.startswith(("backbone.fpns.0.3", "backbone.fpns.1"))}
    for k in same:
        torch.testing.assert_close(lite.state_dict()[k], parser.state_dict()[k], rtol=0, atol=0)


def test_parser_224_sees_an_area_downsampled_warped_crop_and_a_resized_position_embedding():
    exact = build_detector(DetectorSpec(preset="tiny", seed=1))
    det = build_detector(DetectorSpec(preset="tiny", seed=1, region_index="parser-224"))
    assert det.parser.cfg.input_size == 224 and det.parser.cfg.logit_size == 56
    expected = warp_matrix(224, 0.8) @ area_matrix(448, 224)
    np.testing.assert_allclose(det.parser_warp.numpy(), expected, atol=1e-6)
    pe = exact.parser.backbone.visual.positional_embedding.detach()
    grid = pe[1:].reshape(1, 28, 28, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=14, mode="bicubic", align_corners=False, antialias=True)
    got = det.parser.backbone.visual.positional_embedding.detach()
    torch.testing.assert_close(got[0], pe[0])  # CLS position kept
    torch.testing.assert_close(got[1:], resized.flatten(2)[0].t())


@pytest.mark.parametrize("name", LADDER)
def test_every_rung_has_the_detectors_outputs_and_exports_statically(name, image):
    det = build_detector(DetectorSpec(preset="tiny", region_index=name))
    with torch.no_grad():
        out = det(image[:1])
    assert out.token_mask.shape == out.contributions.shape == (1, 14, 14)
    assert out.logit.shape == out.region_tokens.shape == (1,)
    torch.testing.assert_close(out.contributions.sum() + det.probe.bias, out.logit[0], rtol=0, atol=1e-5)
    ep = torch.export.export(det, (image[:1],))
    ops = exported_ops(ep)
    assert not [op for op in ops if any(bad in op for bad in FORBIDDEN_OPS)], ops
    assert not [op for op in ops if "interpolate" in op or "upsample" in op] or rung(name).uses_parser
    with torch.no_grad():
        for a, b in zip(ep.module()(image[:1]), out):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_distilled_rung_runs_no_farl():
    det = build_detector(DetectorSpec(preset="tiny", region_index="distilled"))
    assert det.parser is None
    assert not [k for k in det.state_dict() if k.startswith("parser")]
    assert {k.split(".")[0] for k in det.state_dict()} == {"dinov3", "probe", "region_index"}


def test_parser_rungs_share_the_published_weights():
    exact = build_detector(DetectorSpec(preset="tiny", seed=2))
    for name in ("lite-head", "parser-224"):
        det = build_detector(DetectorSpec(preset="tiny", seed=2, region_index=name))
        torch.testing.assert_close(det.parser.head.state_dict()["head.conv_seg.weight"],
                                   exact.parser.head.state_dict()["head.conv_seg.weight"], rtol=0, atol=0)
        torch.testing.assert_close(det.dinov3.state_dict()["blocks.0.attn.qkv.weight"],
                                   exact.dinov3.state_dict()["blocks.0.attn.qkv.weight"], rtol=0, atol=0)


def test_region_head_file_must_fit_the_dinov3_it_reads(tmp_path):
    head = DistilledRegionHead(RegionHeadConfig(embed_dim=32, grid=14))
    sources = {"dinov3": {"sha256": None}, "parser": {"sha256": None}}
    save_head(head, tmp_path / "h.safetensors", {"sources": sources})
    with pytest.raises(CheckpointError, match="reads 32-wide tokens"):
        load_region_head(tmp_path / "h.safetensors", embed_dim=64, grid=14)
    with pytest.raises(CheckpointError, match="reads 32-wide tokens"):
        build_detector(DetectorSpec(preset="tiny", region_index="distilled", region_head=str(tmp_path / "h.safetensors")))


def test_unknown_rung_and_misplaced_options_are_refused():
    with pytest.raises(ValueError, match="unknown region index 'fast'"):
        DetectorSpec(region_index="fast")
    with pytest.raises(ValueError, match="farl-region head reads FaRL tokens"):
        DetectorSpec(region_index="distilled", head="farl-region")
    with pytest.raises(ValueError, match="read by the distilled region index"):
        DetectorSpec(region_index="lite-head", region_head="h.safetensors")
