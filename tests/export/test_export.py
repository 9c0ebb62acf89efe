"""Every target's bundle computes what the torch reference computes, carries a verifiable manifest, is written
atomically and deterministically."""

import json
import shutil

import numpy as np
import pytest
import torch

from dfedge.data.sources import ToySet
from dfedge.export import bundle as bundle_lib
from dfedge.export.targets import PARITY, TARGETS, markdown_table, resolve
from dfedge.models.factory import DetectorSpec, build_detector, shipped_file

PRECISIONS = ("fp32", "fp16")


def toy_crops(split: str, n: int) -> np.ndarray:
    data = ToySet(split, n)
    return np.stack([data[i].image for i in range(n)]).transpose(0, 3, 1, 2).astype(np.float32)


@pytest.fixture(scope="session")
def detector():
    return build_detector(DetectorSpec(preset="toy"))


def export_all(detector, dist, precisions=PRECISIONS):
    sources = {p: bundle_lib.source_record(shipped_file("toy", p), "") for p in ("dinov3", "parser", "probe")}
    images = toy_crops("val", 2)
    out = {}
    for target in TARGETS.values():
        cache = {}
        for precision in precisions:
            out[target.name, precision] = bundle_lib.write_bundle(
                detector, target, precision, dist, "toy", sources, {"test": True}, images, cache=cache)
    return out


@pytest.fixture(scope="session")
def bundles(detector, tmp_path_factory):
    return export_all(detector, tmp_path_factory.mktemp("dist"))


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("precision", PRECISIONS)
def test_parity_against_torch_on_fresh_toy_crops(bundles, detector, target, precision):
    path, manifest = bundles[target, precision]
    assert manifest["parity"]["ok"]
    images = toy_crops("test", 3)  # crops the export never saw
    parity = bundle_lib.check_parity(detector, TARGETS[target].exporter().load(path), images, precision)
    limits = PARITY[precision]
    assert parity.max_logit_error <= limits["max_logit_error"], parity
    assert parity.mask_agreement >= limits["mask_agreement"], parity
    if precision == "fp32":
        assert parity.masks_identical
    with torch.no_grad():
        assert detector(torch.from_numpy(images)).region_tokens.min() > 0  # real mouths, not empty masks


def test_manifest_schema_and_hashes_verify(bundles):
    for (target, precision), (path, manifest) in bundles.items():
        again = bundle_lib.verify(path)
        assert again == json.loads((path / "manifest.json").read_text())
        assert manifest["schema"] == "dfedge-bundle/1" and manifest["target"] == target
        assert manifest["input"]["layout"] == TARGETS[target].input_layout
        assert manifest["input"]["shape"] == ([1, 448, 448, 3] if target == "tflite" else [1, 3, 448, 448])
        assert len(manifest["alignment"]["template"]) == 5
        assert manifest["labels"]["region_classes"] == [7, 8, 9]
        assert set(manifest["outputs"]) == {"logit", "probability", "token_mask", "region_tokens", "contributions"}
        assert all(len(s["sha256"]) == 64 for s in manifest["sources"].values())
        assert manifest["versions"][TARGETS[target].converter]
        assert (path / "USAGE.md").is_file() and (path / TARGETS[target].model_file).exists()


def test_tampered_file_fails_verification(bundles, tmp_path):
    path, _ = bundles["onnx", "fp32"]
    copy = tmp_path / "b"
    shutil.copytree(path, copy)
    with open(copy / "detector.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01")
    with pytest.raises(ValueError, match="SHA-256 differs"):
        bundle_lib.verify(copy)


def test_metadata_is_embedded_in_the_models(bundles):
    import onnx
    import openvino as ov

    meta = {p.key: p.value for p in onnx.load(str(bundles["onnx", "fp32"][0] / "detector.onnx")).metadata_props}
    assert meta["dfedge.region"] == "mouth" and meta["dfedge.label_set"] == "lapa"
    model = ov.Core().read_model(str(bundles["openvino", "fp32"][0] / "detector.xml"))
    assert model.get_rt_info(["dfedge", "dfedge.region"]).astype(str) == "mouth"


def test_failed_export_leaves_no_bundle(detector, tmp_path, monkeypatch):
    target = TARGETS["onnx"]
    module = target.exporter()

    def broken(detector, example, out_dir, precision, metadata, cache=None):
        (out_dir / "detector.onnx").write_bytes(b"half a model")
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(module, "export", broken)
    with pytest.raises(RuntimeError, match="converter crashed"):
        bundle_lib.write_bundle(detector, target, "fp32", tmp_path, "toy", {}, {}, toy_crops("val", 1))
    assert list((tmp_path / "toy").iterdir()) == []


def test_parity_failure_ships_nothing(detector, tmp_path, monkeypatch):
    target = TARGETS["onnx"]
    module = target.exporter()
    real_load = module.load

    def skewed(bundle, threads=0):
        run = real_load(bundle, threads)
        return lambda images: dict(run(images), logit=run(images)["logit"] + 0.5)

    monkeypatch.setattr(module, "load", skewed)
    with pytest.raises(bundle_lib.ParityError):
        bundle_lib.write_bundle(detector, target, "fp32", tmp_path, "toy", {}, {}, toy_crops("val", 1))
    assert list((tmp_path / "toy").iterdir()) == []


def test_exports_are_deterministic(detector, bundles, tmp_path):
    """Byte-identical model files; CoreML's package Manifest.json holds random item identifiers, so there the
    model spec and weights are compared."""
    again = export_all(detector, tmp_path, precisions=("fp32",))
    for target in TARGETS:
        first, second = bundles[target, "fp32"][1]["files"], again[target, "fp32"][1]["files"]
        stable = {k for k in first if not k.endswith("detector.mlpackage/Manifest.json")}
        assert {k: first[k]["sha256"] for k in stable} == {k: second[k]["sha256"] for k in stable}, target


def test_target_table_drives_resolution_and_docs():
    assert [t.name for t in resolve("all")] == ["onnx", "openvino", "coreml", "tflite"]
    with pytest.raises(ValueError, match="unknown target 'tensorrt'"):
        resolve(["tensorrt"])
    table = markdown_table()
    assert all(f"`{name}`" in table for name in TARGETS)


def test_docs_table_is_the_generated_one():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "export.md").read_text()
    inside = doc.split("<!-- targets:begin -->")[1].split("<!-- targets:end -->")[0].strip()
    assert inside == markdown_table()


# The default run covers every rung and every target at least once (distilled on all four); the rest of the
# rung x target matrix runs with -m slow (it was run in full when the rungs were added).
DEFAULT_PAIRS = {("distilled", t) for t in TARGETS} | {("lite-head", "coreml"), ("parser-224", "tflite")}
RUNG_PAIRS = [pytest.param(r, t, marks=() if (r, t) in DEFAULT_PAIRS else pytest.mark.slow, id=f"{r}-{t}")
              for r in ("lite-head", "parser-224", "distilled") for t in TARGETS]


@pytest.mark.parametrize("rung,target_name", RUNG_PAIRS)
def test_every_region_index_rung_exports_to_every_target_with_fp32_parity(rung, target_name, tmp_path):
    """The ladder's rungs are ordinary graphs: the same four exporters, the same parity limits on fresh crops."""
    det = build_detector(DetectorSpec(preset="toy", region_index=rung))
    parts = ("dinov3", "region_head" if rung == "distilled" else "parser", "probe")
    sources = {p: bundle_lib.source_record(shipped_file("toy", p), "") for p in parts}
    fresh = toy_crops("test", 1)  # a crop the export never saw (write_bundle checks one more)
    target = TARGETS[target_name]
    path, manifest = bundle_lib.write_bundle(det, target, "fp32", tmp_path, rung, sources, {"region_index": rung},
                                             toy_crops("val", 1))
    parity = bundle_lib.check_parity(det, target.exporter().load(path), fresh, "fp32")
    assert manifest["parity"]["ok"] and parity.ok, (target.name, parity)
    assert parity.max_logit_error <= PARITY["fp32"]["max_logit_error"] and parity.masks_identical, (target.name, parity)
    assert manifest["labels"]["region_classes"] == [7, 8, 9]
