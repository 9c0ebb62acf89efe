"""dfedge.load: the same parity test for every runtime, input checks, hash checks, and bench.py on its own."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

import dfedge
from dfedge.cli import app
from dfedge.data.sources import ToySet
from dfedge.eval.gate import PARITY
from dfedge.models.factory import DetectorSpec, build_detector
from dfedge.runtimes import BundleError, RuntimeUnavailable, from_torch, verify

TARGETS = ("onnx", "openvino", "tflite", "coreml")


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    toy = ToySet("test", 6)
    return np.stack([toy[i].image for i in range(6)])  # uint8 [6, 448, 448, 3]


@pytest.fixture(scope="module")
def reference(crops):
    return from_torch(build_detector(DetectorSpec()))(crops)


@pytest.fixture(scope="module")
def dist(toy_build):
    return toy_build[1]


@pytest.mark.parametrize("target", TARGETS)
def test_every_runtime_matches_torch(dist, crops, reference, target):
    det = dfedge.load(dist / f"{target}-fp32", interpreter=True)  # CoreML: MIL interpreter off macOS
    result = det(crops)
    assert det.target == target and det.precision == "fp32"
    assert result.logit.shape == (6,) and result.token_mask.shape == reference.token_mask.shape == (6, 14, 14)
    got, ref = result.raw, reference.raw  # the graphs' own outputs, whatever the verdict
    error = np.abs(got["logit"] - ref["logit"]) / np.maximum(1, np.abs(ref["logit"]))
    assert error.max() <= PARITY["fp32"]["max_logit_error"]
    assert np.abs(got["probability"] - ref["probability"]).max() <= 1e-5
    assert list(result.status) == list(reference.status) and result.decision == reference.decision
    np.testing.assert_array_equal(result.token_mask, reference.token_mask)
    np.testing.assert_array_equal(result.region_tokens, reference.region_tokens)
    np.testing.assert_allclose(result.contributions, reference.contributions, atol=1e-4)
    assert result.found.any() and result.region_tokens.dtype == np.int32
    # a single HWC crop is a batch of one
    assert np.isclose(det(crops[0]).raw["logit"][0], got["logit"][0])


@pytest.mark.skipif(platform.system() == "Darwin", reason="CoreML predicts on macOS")
def test_coreml_off_macos_says_so(dist):
    with pytest.raises(RuntimeUnavailable, match="only on macOS"):
        dfedge.load(dist / "coreml-fp32")


def test_bad_crops_are_refused(dist, crops):
    det = dfedge.load(dist / "onnx-fp32")
    with pytest.raises(ValueError, match=r"uint8 \[B, 448, 448, 3\].*float32"):
        det(crops.astype(np.float32))
    with pytest.raises(ValueError, match=r"got uint8 \[1, 224, 224, 3\]"):
        det(crops[:1, :224, :224])


def test_tampered_bundle_is_refused(dist, tmp_path):
    bundle = shutil.copytree(dist / "onnx-fp32", tmp_path / "b")
    model = bundle / "detector.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 1
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="detector.onnx: SHA-256 differs"):
        dfedge.load(bundle)
    with pytest.raises(BundleError, match="no manifest.json"):
        dfedge.load(tmp_path)


# bench.py must run where only numpy and the runtime exist: importing dfedge (or torch) fails in this process.
BLOCKED = ("import sys, runpy; sys.modules.update(dfedge=None, torch=None); sys.argv = ['bench.py'] + sys.argv[1:]; "
           "runpy.run_path('bench.py', run_name='__main__')")
# ExecuTorch's Python runtime is built on torch (it takes torch tensors; its C++ runtime on a device needs none):
# for its bundles only the kit is blocked.
BLOCKED_KIT = BLOCKED.replace("torch=None", "")


def blocked(target: str) -> str:
    return BLOCKED_KIT if target == "executorch" else BLOCKED


@pytest.mark.parametrize("target", ["onnx", "openvino", "tflite", "executorch"])
def test_bench_py_runs_from_a_copied_bundle_without_the_kit(dist, tmp_path, target):
    bundle = shutil.copytree(dist / f"{target}-fp32", tmp_path / "copy")
    out = tmp_path / "result.json"
    ballast = np.ones(2**26)  # 512 MB resident in this parent: the child's peak RSS must not include it
    proc = subprocess.run([sys.executable, "-c", blocked(target), "--runs", "2", "--warmup", "1", "--label", "box A",
                           "--out", str(out), "--validate", "--placement"], cwd=bundle, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    # device-side accuracy from the validation pack, numpy + runtime only: here the device is the kit's own host, so
    # it must repeat what the kit recorded; the pack's reference AUC is scikit-learn's on the same scores
    manifest = json.loads((bundle / "manifest.json").read_text())
    pack, host, device = manifest["validation_pack"], manifest["validation_pack"]["host"], result["validation"]
    assert device["crops"] == pack["crops"] == len(pack["ids"]) > pack["fakes"] > 0
    assert device["delta_auc"] == pytest.approx(host["delta_auc"], abs=1e-3) and device["host"] == host
    assert device["mask_agreement"] >= 0.99 and device["flip_rate"] <= 0.05 and "validation pack" in proc.stdout
    # where the ops ran on this device: the runtime's view read by bench.py itself (ExecuTorch's: the lowering's)
    assert result["placement"]["ops"]["total"] == manifest["placement"]["ops"]["total"] > 0
    assert result["placement"]["gemm_gflops_by_dtype"] == manifest["placement"]["gemm_gflops_by_dtype"]
    with np.load(bundle / "validation.npz") as z:
        assert device["reference_auc"] == pytest.approx(roc_auc_score(z["labels"], z["logits"]), abs=1e-12)
    assert result["schema"] == "dfedge-bench/1" and result["status"] == "ok"
    assert result["target"] == target and result["runs"] == 2 and result["facts"]["label"] == "box A"
    lat = result["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"]
    assert 0 < result["peak_rss_mb"] < 450 and ballast.sum() > 0  # toy model + runtime: ~120-250 MB
    assert result["load_s"] > 0 and result["facts"]["runtime_version"]


def test_bench_py_reports_coreml_unavailable_off_macos(dist, tmp_path):
    if platform.system() == "Darwin":
        pytest.skip("CoreML predicts on macOS")
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "bench.py", "--runs", "1", "--out", str(out)], cwd=dist / "coreml-fp32",
                          capture_output=True, text=True)
    assert proc.returncode == 3 and "macOS" in proc.stderr
    assert json.loads(out.read_text())["status"] == "unavailable"


def test_bench_command_times_bundles_against_torch(dist, tmp_path):
    out = tmp_path / "set.json"
    result = CliRunner().invoke(app, ["bench", str(dist / "onnx-fp32"), str(dist / "coreml-fp32"), "--runs", "2",
                                      "--warmup", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    onnx, coreml = data["results"]
    (torch_ref,) = data["references"]
    assert onnx["status"] == "ok" and torch_ref["target"] == "torch" and torch_ref["status"] == "ok"
    assert onnx["speedup_vs_torch"] == pytest.approx(torch_ref["latency_ms"]["p50"] / onnx["latency_ms"]["p50"])
    assert coreml["status"] == ("ok" if platform.system() == "Darwin" else "unavailable")
    assert "onnx-fp32" in result.output and "torch-fp32" in result.output


def test_report_merge_builds_table_and_chart_from_two_devices(dist, tmp_path):
    files = []
    for label, runs, check in (("box A", 2, ["--validate"]), ("box B", 3, [])):
        out = tmp_path / f"{label}.json"
        subprocess.run([sys.executable, "bench.py", "--runs", str(runs), "--warmup", "0", "--label", label,
                        "--out", str(out), *check], cwd=dist / "tflite-fp32", check=True, capture_output=True)
        files.append(out)
    result = CliRunner().invoke(app, ["report", "merge", *map(str, files), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "merged" / "merged.json").read_text())
    assert [(r["device"], r["target"], r["precision"]) for r in rows] == [("box A", "tflite", "fp32"),
                                                                         ("box B", "tflite", "fp32")]
    assert all(r["p50 ms"] > 0 for r in rows)
    table = (tmp_path / "merged" / "merged.md").read_text()
    assert "| box A | tflite | fp32 | exact | ok |" in table
    # device accuracy beside device latency: box A ran its validation pack, box B did not
    a = json.loads(files[0].read_text())["validation"]
    assert rows[0]["ΔAUC pp"] == pytest.approx(a["delta_auc"] * 100) and rows[0]["pack"] == a["crops"] > 0
    assert rows[1]["ΔAUC pp"] is None and rows[1]["pack"] is None
    assert f"| {a['delta_auc'] * 100:+.2f} | {a['flip_rate']:.1%} | {a['mask_agreement']:.4f} | {a['crops']} |" in table
    import matplotlib.pyplot as plt

    image = plt.imread(tmp_path / "merged" / "latency.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_report_merge_names_a_bad_file(tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text('{"hello": 1}')
    result = CliRunner().invoke(app, ["report", "merge", str(bad), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "notes.json: schema None" in result.output
    assert not (tmp_path / "m" / "merged.md").exists()


def test_a_tflite_bundle_whose_input_is_not_named_image_still_opens(dist, crops, reference, tmp_path):
    """Bundles written before the kit named the TFLite signature input `image` call it args_0 (litert-torch's
    name): the runtime reads the name from the model's own signature."""
    from ai_edge_litert.tools import flatbuffer_utils

    from dfedge.export.bundle import file_hashes

    bundle = shutil.copytree(dist / "tflite-fp32", tmp_path / "old")
    model = flatbuffer_utils.read_model(bundle / "detector.tflite")
    model.signatureDefs[0].inputs[0].name = "args_0"
    flatbuffer_utils.write_model(model, bundle / "detector.tflite")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"] = file_hashes(bundle)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = dfedge.load(bundle)(crops[:2]).raw
    error = np.abs(result["logit"] - reference.raw["logit"][:2]) / np.maximum(1, np.abs(reference.raw["logit"][:2]))
    assert error.max() <= PARITY["fp32"]["max_logit_error"]


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A toy fake (toy:test 7) pasted into a 640x480 picture: (path of its .npy, the image, the torch host's verdict)."""
    import cv2

    from dfedge.data.synthetic import toy_sample

    sample = toy_sample(7, "test")
    image = cv2.GaussianBlur(np.random.default_rng(0).uniform(60, 200, (480, 640, 3)).astype(np.uint8), (0, 0), 3)
    image[90:390, 170:470] = cv2.resize(sample.image, (300, 300), interpolation=cv2.INTER_AREA)
    path = tmp_path_factory.mktemp("photo") / "toy.npy"
    np.save(path, image)
    (host,) = from_torch(build_detector(DetectorSpec())).score_image(image)
    assert host.status == "ok" and host.decision == "fake" and sample.fake
    return path, image, host


@pytest.mark.parametrize("target", ["onnx", "openvino", "tflite", "executorch"])
def test_a_bundle_scores_a_photo_with_numpy_and_its_runtime_only(dist, photo, tmp_path, target):
    """bench.py --image in a process where importing torch or dfedge fails: detector, alignment and model all run
    from the bundle, and give the torch host's verdict."""
    path, _, host = photo
    bundle = shutil.copytree(dist / f"{target}-fp32", tmp_path / "copy")
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-c", blocked(target), "--runs", "1", "--warmup", "0", "--image", str(path),
                           "--out", str(out)], cwd=bundle, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())["photo"]
    (verdict,) = result["verdicts"]
    assert result["faces"] == 1 and verdict["status"] == "ok" and verdict["decision"] == host.decision
    assert abs(verdict["logit"] - host.logit) <= PARITY["fp32"]["max_logit_error"] * max(1, abs(host.logit))
    assert np.abs(np.array(verdict["face"]["landmarks"]) - host.face.landmarks).max() <= 0.5
    assert all(result[f"{step}_ms"] > 0 for step in ("decode", "detect", "align", "score"))
    # the Python way USAGE.md gives, with the kit blocked too
    usage = (f"import sys; sys.modules.update(dfedge=None{'' if target == 'executorch' else ', torch=None'}); import numpy as np, runpy; "
             f"v = runpy.run_path('bench.py')['load']('.').score_image(np.load({str(path)!r}))[0]; print(v.status, v.decision)")
    proc = subprocess.run([sys.executable, "-c", usage], cwd=bundle, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.split() == ["ok", host.decision], proc.stderr


@pytest.mark.parametrize("target", TARGETS)
def test_every_bundle_carries_its_front_end_with_parity(dist, photo, target):
    """The manifest records the front end's parity against the kit's torch nets; the kit opens the bundle (CoreML
    off macOS: the MIL interpreter) and scores the photo as the torch host does, or with given landmarks."""
    _, image, host = photo
    manifest = verify(dist / f"{target}-fp32")
    front = manifest["front_end"]
    assert front["parity"]["ok"] and front["parity"]["faces"] > 0 and front["parity"]["same_faces"]
    assert front["parity"]["max_landmark_error_px"] <= 0.5 and front["parity"]["max_crop_mad"] <= 1.0
    assert front["sources"]["licence"].startswith("MIT") and len(front["sources"]["sha256"]) == 64
    assert {"dfedge_device", "bench.py", *front["files"].values()} <= {f.split("/")[0] for f in manifest["files"]}
    det = dfedge.load(dist / f"{target}-fp32", interpreter=True)
    (verdict,) = det.score_image(image)
    assert verdict.decision == host.decision and np.abs(verdict.face.landmarks - host.face.landmarks).max() <= 0.5
    (given,) = det.score_image(image, landmarks=host.face.landmarks)  # a platform's own detector: no MTCNN
    assert given.face.score == 1.0 and given.decision == host.decision


def test_full_precision_switches_off_every_cuda_shortcut():
    """The full-precision GPU reference (dfedge reference on CUDA): TF32 and reduced-precision reductions off, float32
    matmul precision 'highest'. The switches are process-wide torch settings, so they are checked here without a GPU
    and restored after."""
    import torch

    from dfedge.runtimes.reference import full_precision, precision_settings

    before = precision_settings()
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("medium")
        assert full_precision() == {"matmul_allow_tf32": False, "cudnn_allow_tf32": False, "fp16_reduced_precision_reduction": False,
                                    "bf16_reduced_precision_reduction": False, "float32_matmul_precision": "highest"}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before["matmul_allow_tf32"], before["cudnn_allow_tf32"]
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = before["fp16_reduced_precision_reduction"]
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = before["bf16_reduced_precision_reduction"]
        torch.set_float32_matmul_precision(before["float32_matmul_precision"])
