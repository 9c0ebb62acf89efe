"""The shipped toy models do what the toy world promises (held-out splits, shipped weights)."""

import numpy as np
import pytest
import torch

from dfedge.data.sources import ToySet
from dfedge.models.factory import DetectorSpec, build_detector, shipped_file
from dfedge.train.probe import Features, extract_features, fit_probe, probe_auc
from dfedge.train.toy import mouth_iou

pytestmark = pytest.mark.heavy  # minutes of building or training: .ci/run's second command (-m heavy)


def test_toy_weights_ship_with_the_package():
    for part in ("dinov3", "parser", "probe"):
        path = shipped_file("toy", part)
        assert path is not None and path.stat().st_size < 5_000_000, part


def test_shipped_parser_finds_the_mouth_on_held_out_faces():
    det = build_detector(DetectorSpec(preset="toy"))
    assert mouth_iou(det, split="val", count=48) >= 0.8


@pytest.fixture(scope="module")
def features(toy_faces):
    """(detector, train features, test features) per head. The cls head's feature is DINOv3's CLS token, whatever
    decides the region (test below), so its detector uses the distilled index and runs no FaRL."""
    train, test = toy_faces("train", 240), toy_faces("test", 160)
    out = {}
    for head, index in (("region", "exact"), ("cls", "distilled")):
        det = build_detector(DetectorSpec(preset="toy", head=head, region_index=index, random_probe=True))  # (features)
        out[head] = (det, extract_features(det, train), extract_features(det, test))
    return out


def test_drawn_toy_faces_are_the_toy_sets_faces(toy_faces):
    toy = ToySet("test", 3)
    drawn = toy_faces("test", 3)
    assert drawn.description == toy.description and len(drawn) == 3
    np.testing.assert_array_equal(drawn.labels(), toy.labels())
    for i in range(3):
        a, b = drawn[i], toy[i]
        assert (a.id, a.label, a.video_id) == (b.id, b.label, b.video_id)
        np.testing.assert_array_equal(a.image, b.image)


def test_cls_features_do_not_depend_on_the_region_index(toy_faces):
    faces = toy_faces("test", 2)
    exact, distilled = (extract_features(build_detector(DetectorSpec(preset="toy", head="cls", region_index=index, random_probe=True)), faces)
                        for index in ("exact", "distilled"))
    np.testing.assert_array_equal(exact.features, distilled.features)


def test_mouth_probe_detects_and_beats_the_cls_probe(features):
    aucs = {}
    for head, (_, train, test) in features.items():
        assert len(train.labels) == 240 and len(test.labels) == 160
        probe, _ = fit_probe(train, head, "mouth", "lapa")
        aucs[head] = probe_auc(probe, test)
    assert aucs["region"] >= 0.95, aucs
    assert aucs["region"] - aucs["cls"] >= 0.15, aucs


def test_shipped_probe_scores_held_out_faces(features):
    det, _, test = features["region"]  # the default toy detector: shipped parser and probe
    n = 64  # the first 64 held-out faces (the region test set's first 64)
    feats = Features(test.features[:n], test.labels[:n], test.region_tokens[:n], test.ids[:n], test.centroids[:n])
    assert probe_auc(det.probe, feats) >= 0.95
    assert (feats.region_tokens > 0).mean() > 0.95  # the mouth is found on nearly every face
    assert np.isfinite(det.probe.info.threshold) and det.probe.info.threshold_rule == "eer"
    assert torch.all(torch.isfinite(det.probe.weight))
