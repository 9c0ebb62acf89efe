"""The shipped toy models do what the toy world promises (held-out splits, shipped weights)."""

import numpy as np
import pytest
import torch

from dfedge.data.sources import ToySet
from dfedge.models.factory import DetectorSpec, build_detector, shipped_file
from dfedge.train.probe import extract_features, fit_probe, probe_auc
from dfedge.train.toy import mouth_iou


def test_toy_weights_ship_with_the_package():
    for part in ("dinov3", "parser", "probe"):
        path = shipped_file("toy", part)
        assert path is not None and path.stat().st_size < 5_000_000, part


def test_shipped_parser_finds_the_mouth_on_held_out_faces():
    det = build_detector(DetectorSpec(preset="toy"))
    assert mouth_iou(det, split="val", count=48) >= 0.8


@pytest.fixture(scope="module")
def features():
    out = {}
    for head in ("region", "cls"):
        det = build_detector(DetectorSpec(preset="toy", head=head))
        out[head] = (extract_features(det, ToySet("train", 240)), extract_features(det, ToySet("test", 160)))
    return out


def test_mouth_probe_detects_and_beats_the_cls_probe(features):
    aucs = {}
    for head, (train, test) in features.items():
        probe, _ = fit_probe(train, head, "mouth", "lapa")
        aucs[head] = probe_auc(probe, test)
    assert aucs["region"] >= 0.95, aucs
    assert aucs["region"] - aucs["cls"] >= 0.15, aucs


def test_shipped_probe_scores_held_out_faces():
    det = build_detector(DetectorSpec(preset="toy"))
    data = ToySet("test", 64)
    feats = extract_features(det, data)
    assert probe_auc(det.probe, feats) >= 0.95
    assert (feats.region_tokens > 0).mean() > 0.95  # the mouth is found on nearly every face
    assert np.isfinite(det.probe.info.threshold) and det.probe.info.threshold_rule == "eer"
    assert torch.all(torch.isfinite(det.probe.weight))
