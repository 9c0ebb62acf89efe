"""Reference scores, the AUC-drift comparison and the CI gate, on the toy world."""

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dfedge.cli import app
from dfedge.data.sources import ToySet
from dfedge.eval.scores import ScoresError, load_scores, save_scores, score_set
from dfedge.eval.validate import Budget, compare
from dfedge.models.factory import DetectorSpec, build_detector, identity
from dfedge.runtimes import torch_runner

N = 24
DATA = f"toy:test:{N}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    det = build_detector(DetectorSpec(preset="toy"))
    scores = score_set(torch_runner(det), ToySet("test", N), batch=8)
    scores.header.update(model="torch fp32", detector=dataclasses.asdict(DetectorSpec(preset="toy")), data=DATA,
                         threshold=float(det.probe.info.threshold), device={"device": "cpu"},
                         identity=identity(DetectorSpec(preset="toy")))
    path = tmp_path_factory.mktemp("ref") / "reference.scores"
    save_scores(path, scores)
    return path


def perturbed(scores, scale: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = scores.logits + rng.normal(0, scale, len(scores)).astype(np.float32)
    return dataclasses.replace(scores, logits=logits, probabilities=1 / (1 + np.exp(-logits)),
                               header=dict(scores.header, model="perturbed copy"))


def test_scores_round_trip_keep_every_field(reference):
    s = load_scores(reference)
    assert len(s) == N and s.token_masks.shape == (N, 14, 14) and s.contributions.shape == (N, 14, 14)
    assert set(np.unique(s.labels)) == {0, 1} and s.header["data"] == DATA
    assert (s.region_tokens == s.token_masks.sum(axis=(1, 2))).all()
    # contributions of the region head sum to logit - bias on every face with a region
    det = build_detector(DetectorSpec(preset="toy"))
    bias = float(det.probe.bias.detach())
    np.testing.assert_allclose(s.contributions.astype(np.float32).sum(axis=(1, 2))[s.scored] + bias,
                               s.logits[s.scored], atol=2e-2)


def test_identical_copy_passes_with_p_one_and_no_flips(reference):
    ref = load_scores(reference)
    comp = compare(ref, load_scores(reference))
    assert comp.passed and comp.delta_auc == 0.0
    assert comp.delong.p_value == 1.0 and comp.agreement.flip_rate == 0.0
    assert comp.masks.token_agreement == 1.0 and comp.delta_auc_ci == (0.0, 0.0)
    assert comp.reference.auc > 0.8  # the toy world is learnable: the reference actually separates the labels


def test_perturbed_copy_fails_the_gate(reference):
    ref = load_scores(reference)
    comp = compare(ref, perturbed(ref, 8.0), Budget(max_auc_drop=0.005, max_flip_rate=0.01))
    assert not comp.passed
    assert comp.delta_auc < -0.005 and comp.agreement.flip_rate > 0.01
    assert any("AUC drop" in r for r in comp.reasons) and any("flip" in r for r in comp.reasons)


def test_scores_for_other_samples_are_refused(reference):
    ref = load_scores(reference)
    other = dataclasses.replace(ref, ids=np.roll(ref.ids, 1))
    with pytest.raises(ScoresError, match="other samples"):
        compare(ref, other)


def test_bad_scores_file_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.scores"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ScoresError, match="bad.scores: not a readable scores file"):
        load_scores(bad)


def test_cli_gate_exit_codes_and_reports(reference, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(reference), "--reference", str(reference), "--out", str(tmp_path / "same")])
    assert ok.exit_code == 0, ok.output
    report = json.loads((tmp_path / "same" / "report.json").read_text())
    assert report["passed"] and report["comparison"]["delong"]["p_value"] == 1.0
    for name in ("report.md", "roc.png", "montage.png"):
        assert (tmp_path / "same" / name).stat().st_size > 0

    bad = tmp_path / "perturbed.scores"
    save_scores(bad, perturbed(load_scores(reference), 8.0))
    fail = runner.invoke(app, ["validate", str(bad), "--reference", str(reference), "--out", str(tmp_path / "bad")])
    assert fail.exit_code == 1, fail.output
    assert "FAIL" in (tmp_path / "bad" / "report.md").read_text()


def test_reference_command_writes_scores_with_device(tmp_path):
    out = tmp_path / "r.scores"
    result = CliRunner().invoke(app, ["reference", "--data", "toy:val:6", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    s = load_scores(out)
    assert len(s) == 6 and s.header["device"]["device"] == "cpu" and s.header["detector"]["preset"] == "toy"


@pytest.mark.heavy
def test_validate_a_bundle_with_its_runtime_and_degradations(reference, make_job, tmp_path):
    from dfedge.export.bundle import write_bundle
    from dfedge.models.factory import weight_sources

    det = build_detector(DetectorSpec(preset="toy"))
    path, _ = write_bundle(make_job(det, "onnx", sources=weight_sources(DetectorSpec())), tmp_path / "dist")
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["validate", str(path), "--reference", str(reference), "--out", str(out),
                                      "--degrade", "jpeg:q=20,blur:s=3"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    comp = report["comparison"]
    assert comp["agreement"]["max_abs"] < 1e-4 and comp["agreement"]["flip_rate"] == 0.0  # fp32 bundle == torch
    assert [d["degradation"] for d in report["degradations"]] == ["jpeg:q=20", "blur:s=3"]
    for d in report["degradations"]:  # the degraded crops really differ from the clean ones: scores move
        assert d["comparison"]["agreement"]["max_abs"] < 1e-3
        assert d["comparison"]["reference"] != comp["reference"]  # (the ROC's thresholds move with the logits)
    assert len(load_scores(out / "artifact.scores")) == N


def test_budgets_are_checked_when_the_command_line_is_read(reference):
    for option, value in (("--max-auc-drop", "nan"), ("--max-auc-drop", "-1"), ("--max-flip-rate", "nan"),
                          ("--min-correlation", "1.5")):
        result = CliRunner().invoke(app, ["validate", str(reference), "--reference", str(reference), option, value])
        assert result.exit_code == 2 and "is not a fraction from 0 to 1" in result.output, (option, value)
        assert "Traceback" not in result.output


def test_default_budgets_catch_flips_and_an_uncorrelated_model(reference, tmp_path):
    """Without any option: a copy whose decisions flip (AUC budget alone could pass it) and one whose scores are
    unrelated to the reference's fail, each with its reason."""
    ref = load_scores(reference)
    flipped = dataclasses.replace(ref, logits=2 * ref.threshold - ref.logits)  # every decision flips
    rng = np.random.default_rng(0)
    shuffled = dataclasses.replace(ref, logits=rng.permutation(ref.logits))
    for scores, reason in ((flipped, "decision flip rate"), (shuffled, "score correlation")):
        path = tmp_path / "other.scores"
        save_scores(path, scores)
        result = CliRunner().invoke(app, ["validate", str(path), "--reference", str(reference), "--out", str(tmp_path / "r")])
        assert result.exit_code == 1 and reason in result.output, result.output


@pytest.mark.heavy
def test_a_reference_of_another_model_is_refused(reference, make_job, tmp_path):
    """The case found: a CLS-head reference against a region-head bundle (47 % of decisions flipped, exit 0
    before). The manifest and the reference record their model; validate refuses before scoring."""
    from dfedge.export.bundle import write_bundle
    from dfedge.models.factory import weight_sources

    det = build_detector(DetectorSpec(preset="toy"))
    bundle, _ = write_bundle(make_job(det, "onnx", sources=weight_sources(DetectorSpec())), tmp_path / "dist")
    cls_ref = tmp_path / "cls.scores"
    made = CliRunner().invoke(app, ["reference", "--head", "cls", "--random-probe", "--data", "toy:test:8",
                                    "--out", str(cls_ref), "--device", "cpu"])
    assert made.exit_code == 0, made.output
    result = CliRunner().invoke(app, ["validate", str(bundle), "--reference", str(cls_ref), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "is another model than" in result.output and "head 'region', not 'cls'" in result.output
    assert not (tmp_path / "r" / "artifact.scores").exists()  # refused before the bundle scored anything
    anonymous = dataclasses.replace(load_scores(reference), header={k: v for k, v in load_scores(reference).header.items()
                                                                       if k != "identity"})
    save_scores(tmp_path / "anon.scores", anonymous)
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "anon.scores"), "--reference", str(reference)])
    assert result.exit_code == 2 and "records no model identity" in result.output


def test_a_nan_score_never_passes(reference):
    ref = load_scores(reference)
    logits = ref.logits.copy()
    logits[np.flatnonzero(ref.scored)[0]] = np.nan
    with pytest.raises(ValueError, match="the artifact gave 1 non-finite scores"):
        compare(ref, dataclasses.replace(ref, logits=logits))


def test_truncated_and_empty_inputs_are_one_line(reference, tmp_path):
    cut = tmp_path / "cut.scores"
    cut.write_bytes(reference.read_bytes()[: reference.stat().st_size // 2])
    result = CliRunner().invoke(app, ["validate", str(cut), "--reference", str(reference)])
    assert result.exit_code == 2 and "cut.scores: not a readable scores file (truncated or corrupt" in result.output
    for data in ("toy:val:0", str(tmp_path / "empty")):
        (tmp_path / "empty" / "real").mkdir(parents=True, exist_ok=True)
        (tmp_path / "empty" / "fake").mkdir(exist_ok=True)
        result = CliRunner().invoke(app, ["reference", "--data", data, "--out", str(tmp_path / "r.scores")])
        assert result.exit_code == 2 and "Traceback" not in result.output and "KeyError" not in result.output, result.output
        assert result.output.strip().count("\n") == 0 and "no samples" in result.output, result.output
