"""Each bundle's placement report (where its ops run, in which precision) against the runtime's own view, the
numpy AUC that `bench.py --validate` computes on a device, and its refusal of a bundle without a validation pack."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from dfedge.build import placement_cell
from dfedge.device.validation import auc

def test_every_bundle_of_the_build_reports_its_placement(toy_build, onnxruntime_view):
    result, dist = toy_build
    model_gflops = json.loads((dist / "build.json").read_text())["rows"][0]["gflops"]  # the torch graph's, counted apart
    for target in ("onnx", "openvino", "tflite", "executorch", "coreml"):
        for precision in ("fp32", "fp16"):
            manifest = json.loads((dist / f"{target}-{precision}" / "manifest.json").read_text())
            p = manifest["placement"]
            if target == "coreml":
                assert p["observed"] is False and "Neural Engine" in p["reason"]
                continue
            assert p["ops"]["total"] == p["ops"]["accelerated"] + p["ops"]["fallback"] > 0
            gemm = sum(sum(d.values()) for d in p["gemm_gflops_by_dtype"].values())
            assert gemm == pytest.approx(sum(p["gflops"].values()), rel=1e-3)
            # each runtime's GEMM/convolution FLOPs, from its own shapes, against the torch graph's count (layout and
            # fusion move it a little: 0.72-1.12 x on the toy graph; a wrong formula is off by integer factors)
            assert 0.65 * model_gflops < gemm < 1.25 * model_gflops, (target, precision, gemm, model_gflops)
            assert p["accelerated_flop_share"] > 0.8, (target, precision, p["fallback_ops"])  # ExecuTorch toy: 0.87
            if target != "executorch":  # measured when the kit opened the bundle, with the options it records
                assert p["options"] == manifest["runtime_options"] and p["isa"] == manifest["validated_on"]["isa"]
            if target in ("openvino", "tflite", "onnx"):  # float graphs compute in float32 here (OpenVINO: the
                # recorded f32 hint, no bfloat16 even on a CPU that has it; LiteRT: fp16 weights dequantized at load)
                assert {d for where in p["gemm_gflops_by_dtype"].values() for d in where} == {"float32"}, (target, p)
    p = json.loads((dist / "onnx-fp32" / "manifest.json").read_text())["placement"]
    assert onnxruntime_view(dist / "onnx-fp32" / "detector.onnx", p) == set()  # fp32: no integer GEMM kernels
    report = (dist / "report.md").read_text()
    assert "| placement |" in report and "XNNPACK delegate · " in report


def test_placement_cell_in_words():
    p = {"accelerator": "XNNPACK delegate", "accelerated_flop_share": 0.5,
         "gemm_gflops_by_dtype": {"accelerated": {"int8": 3.0}, "fallback": {"float32": 1.0}}}
    assert placement_cell(p) == "50% XNNPACK delegate · int8 75%, float32 25%"
    assert placement_cell(None) == "-"


@given(st.lists(st.tuples(st.integers(0, 1), st.integers(-3, 3)), min_size=2, max_size=60))
def test_numpy_auc_is_scikit_learns_with_ties(pairs):
    labels, scores = np.array(pairs).T
    if len(set(labels)) < 2:
        with pytest.raises(ValueError, match="both classes"):
            auc(labels, scores)
        return
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_validate_without_a_pack_is_one_line(toy_build, tmp_path):
    _, dist = toy_build
    bundle = shutil.copytree(dist / "onnx-fp32", tmp_path / "b")
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "validation.npz").unlink()
    del manifest["files"]["validation.npz"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    run = lambda: subprocess.run([sys.executable, "bench.py", "--runs", "1", "--validate", "--out",  # noqa: E731
                                  str(tmp_path / "r.json")], cwd=bundle, capture_output=True, text=True)
    proc = run()  # the manifest still names the pack: a file it names and does not list is refused
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: {bundle / 'manifest.json'}: validation.npz is not listed: the bundle's files cannot be checked"
    del manifest["validation_pack"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    proc = run()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: {bundle / 'validation.npz'}: no validation pack in this bundle (build it with --validation-pack N)"


def test_runtime_options_a_runtime_refuses_are_one_line(toy_build, tmp_path):
    """bench.py and dfedge.load apply the manifest's runtime options: one outside the format's allow-list is refused
    by verify before anything opens, in one line naming the manifest, not a traceback."""
    import dfedge
    from dfedge.runtimes import BundleError

    _, dist = toy_build
    # (ONNX Runtime only warns about a provider it lacks and runs on the CPU: its allowed options never fail to open)
    for options, said in (({"graph_optimization_level": "FAST"}, "not a valid manifest: /runtime_options/graph_optimization_level"),):
        bundle = shutil.copytree(dist / "onnx-fp32", tmp_path / said[:8].strip())
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["runtime_options"] = dict(manifest["runtime_options"], **options)
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        proc = subprocess.run([sys.executable, "bench.py", "--runs", "1", "--out", str(tmp_path / "r.json")], cwd=bundle,
                              capture_output=True, text=True)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith(f"error: {bundle / 'manifest.json'}: {said}"), proc.stderr
        with pytest.raises(BundleError, match="runtime_options"):
            dfedge.load(bundle)
