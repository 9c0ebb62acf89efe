"""The topk and ensemble heads export to every target with fp32 parity: Top-K's selection and its exact
contributions, and the discretized vote computed in the graph (the rule checked on each graph's own streams)."""

import numpy as np
import pytest

from dfedge.data.sources import ToySet, toy_crops
from dfedge.eval.gate import PARITY, check_parity
from dfedge.export import bundle as bundle_lib
from dfedge.models.factory import DetectorSpec, build_detector, weight_sources
from dfedge.runtimes import open_runtime, torch_runner
from dfedge.targets import TARGETS

pytestmark = pytest.mark.heavy  # minutes of building or training: .ci/run's second command (-m heavy)

HEADS = ("topk", "ensemble")
# LiteRT's and ExecuTorch's conversions take 30-45 s each here: those four run with -m slow (every `dfedge build
# --head topk|ensemble` checks the same parity on every target before it ships a bundle)
PER_TARGET = [pytest.param(t, marks=pytest.mark.slow) if t in ("tflite", "executorch") else t for t in TARGETS]


@pytest.fixture(scope="module")
def head_bundles(make_job, tmp_path_factory):
    """head -> (detector, {target: (path, manifest)}): the shipped toy probe of each head, fp32 on every target."""
    made = {}

    def get(head: str, target: str):
        if head not in made:
            made[head] = build_detector(DetectorSpec(head=head)), {}
        det, paths = made[head]
        if target not in paths:
            job = make_job(det, target, sources=weight_sources(DetectorSpec(head=head)), parity_images=toy_crops(2))
            paths[target] = bundle_lib.write_bundle(job, tmp_path_factory.mktemp(f"{head}-{target}"))
        return det, paths[target]

    return get


@pytest.mark.parametrize("target", PER_TARGET)
def test_topk_exports_with_parity_of_logit_selection_and_contributions(head_bundles, target):
    det, (path, manifest) = head_bundles("topk", target)
    assert manifest["parity"]["ok"] and manifest["probe"]["head"] == "topk"
    assert manifest["probe"]["head_config"]["k"] == det.probe.k == 16
    run, reference = open_runtime(path, target, interpreter=True)[0], torch_runner(det)
    fresh = ToySet("test", 2, "mixed").crops()
    parity = check_parity(reference, run, fresh, "fp32")
    assert parity.ok and parity.masks_identical and parity.max_logit_error <= PARITY["fp32"]["max_logit_error"], parity
    bias = float(det.probe.bias)
    for image in fresh:
        out, ref = run(image[None]), reference(image[None])
        np.testing.assert_allclose(out["contributions"], ref["contributions"], atol=1e-4)
        # the graph's own contributions decompose its own logit
        assert abs(float(np.sum(out["contributions"])) + bias - float(out["logit"][0])) < 1e-3
        assert 0 < int(np.rint(out["region_tokens"][0])) == int(np.sum(out["token_mask"] > 0.5))


@pytest.mark.parametrize("target", PER_TARGET)
def test_ensemble_exports_with_parity_of_streams_and_the_vote(head_bundles, target):
    det, (path, manifest) = head_bundles("ensemble", target)
    probe = manifest["probe"]
    assert manifest["parity"]["ok"] and manifest["parity"]["vote_agreement"] == 1.0
    assert probe["head_config"]["streams"] == ["mouth", "eyes", "nose", "skin", "global"]
    assert set(probe["head_config"]["calibration_parameters"]) == set(probe["head_config"]["streams"])
    assert manifest["outputs"]["streams"]["shape"] == [1, 5]
    run, reference = open_runtime(path, target, interpreter=True)[0], torch_runner(det)
    fresh = ToySet("test", 3, "mixed").crops()
    vote = (det.probe.vote_weights.tolist(), det.probe.step)
    parity = check_parity(reference, run, fresh, "fp32", vote)
    assert parity.ok and parity.vote_agreement == 1.0 and parity.masks_identical, parity
    for image in fresh:
        out, ref = run(image[None]), reference(image[None])
        np.testing.assert_allclose(out["streams"], ref["streams"], atol=1e-5)
        levels = np.asarray(out["probability"]).reshape(-1)[0] * 10
        assert abs(levels - round(levels)) < 1e-5  # a vote is a whole number of steps
