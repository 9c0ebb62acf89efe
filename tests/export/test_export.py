"""Every target's bundle computes what the torch reference computes, carries a verifiable manifest, is written
atomically and deterministically."""

import hashlib
import json
import shutil

import dataclasses

import numpy as np
import torch
import pytest

from dfedge.data.sources import toy_crops
from dfedge.device.schema import BUNDLE_SCHEMA
from dfedge.eval.gate import PARITY, ParityError, check_parity
from dfedge.export import bundle as bundle_lib
from dfedge.models.factory import DetectorSpec, build_detector, weight_sources
from dfedge.runtimes import open_runtime, torch_runner, verify
from dfedge.targets import TARGETS, markdown_table, resolve

PRECISIONS = ("fp32", "fp16")


def runner(path, target):
    return open_runtime(path, target, interpreter=True)[0]  # what the bundle check runs (CoreML: MIL off macOS)


@pytest.fixture(scope="session")
def detector():
    return build_detector(DetectorSpec(preset="toy"))


def export_all(detector, dist, make_job, precisions=PRECISIONS):
    sources, images = weight_sources(DetectorSpec()), toy_crops(2)
    out = {}
    for target in TARGETS:
        cache = {}
        for precision in precisions:
            job = make_job(detector, target, precision, sources=sources, parity_images=images, cache=cache)
            out[target, precision] = bundle_lib.write_bundle(job, dist)
    return out


@pytest.fixture(scope="session")
def bundles(toy_build):
    """Every target x precision of the exact toy detector, as write_bundle wrote them: the bundles of the session's
    one toy `dfedge build` (tests/conftest.py), which exports exactly these eight, so they are not exported twice."""
    result, dist = toy_build
    assert result.exit_code == 0, result.output
    out = {}
    for target in TARGETS:
        for precision in PRECISIONS:
            path = dist / f"{target}-{precision}"
            out[target, precision] = path, json.loads((path / "manifest.json").read_text())
    return out


class Reference:
    """The torch runner as check_parity calls it, each distinct crop run once per session: the eight
    target x precision parity checks compare against the same torch outputs, computed once."""

    def __init__(self, detector):
        self.run, self.outputs = torch_runner(detector), {}

    def __call__(self, image):
        key = hashlib.sha256(image.tobytes()).hexdigest()
        if key not in self.outputs:
            self.outputs[key] = self.run(image)
        return self.outputs[key]


@pytest.fixture(scope="session")
def fresh(detector):
    """Crops the export never saw, the torch reference on them, and their region-token counts."""
    from dfedge.data.sources import ToySet

    images = ToySet("test", 3).crops()
    reference = Reference(detector)
    region_tokens = np.array([reference(image[None])["region_tokens"] for image in images])
    return images, reference, region_tokens


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("precision", PRECISIONS)
def test_parity_against_torch_on_fresh_toy_crops(bundles, fresh, target, precision):
    path, manifest = bundles[target, precision]
    assert manifest["parity"]["ok"]
    images, reference, region_tokens = fresh  # crops the export never saw
    parity = check_parity(reference, runner(path, target), images, precision)
    limits = PARITY[precision]
    assert parity.samples == len(images) == 3
    assert parity.max_logit_error <= limits["max_logit_error"], parity
    assert parity.mask_agreement >= limits["mask_agreement"], parity
    if precision == "fp32":
        assert parity.masks_identical
    assert region_tokens.min() > 0  # real mouths, not empty masks


def test_manifest_schema_and_hashes_verify(bundles):
    for (target, precision), (path, manifest) in bundles.items():
        again = verify(path)
        assert again == json.loads((path / "manifest.json").read_text())
        assert manifest["schema"] == BUNDLE_SCHEMA and manifest["target"] == target
        assert manifest["input"]["layout"] == TARGETS[target].format.input_layout and manifest["input"]["name"] == "image"
        assert manifest["input"]["shape"] == ([1, 448, 448, 3] if target == "tflite" else [1, 3, 448, 448])
        assert manifest["conversion"]["tool"]  # what converted it, recorded by the converter itself
        assert len(manifest["alignment"]["template"]) == 5
        assert manifest["labels"]["region_classes"] == [7, 8, 9]
        assert set(manifest["outputs"]) == {"logit", "probability", "token_mask", "region_tokens", "contributions", "streams", "feature"}
        assert manifest["outputs"]["feature"]["shape"] == [1, 96]  # the toy DINOv3's width
        assert manifest["outputs"]["streams"]["shape"] == [1, 1]  # the region head: one stream
        assert all(len(s["sha256"]) == 64 for s in manifest["sources"].values())
        assert manifest["versions"][TARGETS[target].converter]
        assert (path / "USAGE.md").is_file() and (path / TARGETS[target].format.model_file).exists()


def test_tampered_file_fails_verification(bundles, tmp_path):
    path, _ = bundles["onnx", "fp32"]
    copy = tmp_path / "b"
    shutil.copytree(path, copy)
    with open(copy / "detector.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01")
    with pytest.raises(ValueError, match="SHA-256 differs"):
        verify(copy)


def test_metadata_is_embedded_in_the_models(bundles):
    """Every model file carries the manifest's key facts inside itself, read back with each format's own tools."""
    import coremltools as ct
    import onnx
    import openvino as ov
    from ai_edge_litert.tools import flatbuffer_utils

    embedded = {}
    embedded["onnx"] = {p.key: p.value for p in onnx.load(str(bundles["onnx", "fp32"][0] / "detector.onnx")).metadata_props}
    model = ov.Core().read_model(str(bundles["openvino", "fp32"][0] / "detector.xml"))
    embedded["openvino"] = {k: model.get_rt_info(["dfedge", k]).astype(str) for k in ("dfedge.region", "dfedge.label_set")}
    spec = ct.utils.load_spec(str(bundles["coreml", "fp32"][0] / "detector.mlpackage"))
    embedded["coreml"] = dict(spec.description.metadata.userDefined)
    for precision in PRECISIONS:  # LiteRT's flatbuffer tools; fp16 is rewritten by ai-edge-quantizer before it is added
        flat = flatbuffer_utils.read_model(bundles["tflite", precision][0] / "detector.tflite")
        meta = {m.name.decode(): bytes(flat.buffers[m.buffer].data).decode() for m in flat.metadata}
        assert meta["dfedge.precision"] == precision and meta["dfedge.schema"] == BUNDLE_SCHEMA
        embedded[f"tflite-{precision}"] = meta
    from dfedge.export.executorch import read_metadata  # a constant method of the program, run by ExecuTorch's runtime

    for precision in PRECISIONS:
        embedded[f"executorch-{precision}"] = meta = read_metadata(bundles["executorch", precision][0] / "detector.pte")
        assert meta["dfedge.precision"] == precision
    for where, meta in embedded.items():
        assert meta["dfedge.region"] == "mouth" and meta["dfedge.label_set"] == "lapa", where


def test_failed_export_leaves_no_bundle(detector, make_job, tmp_path):
    def broken(job, out_dir, report):
        (out_dir / "detector.onnx").write_bytes(b"half a model")
        raise RuntimeError("converter crashed")

    job = dataclasses.replace(make_job(detector, "onnx"), target=dataclasses.replace(TARGETS["onnx"], exporter=broken))
    with pytest.raises(RuntimeError, match="converter crashed"):
        bundle_lib.write_bundle(job, tmp_path)
    assert list((tmp_path / "toy").iterdir()) == []


def test_parity_failure_ships_nothing(rung_bundle, conversions, make_job, tmp_path, monkeypatch):
    real_open = bundle_lib.open_runtime
    det = rung_bundle("distilled", "onnx")[0]  # its real ONNX graph, converted once for the rung test below

    def skewed(*args, **kwargs):  # the runtime of the bundle being checked, its logits off by 0.5
        run, runtime = real_open(*args, **kwargs)
        return (lambda images: dict(run(images), logit=run(images)["logit"] + 0.5)), runtime

    monkeypatch.setattr(bundle_lib, "open_runtime", skewed)
    with pytest.raises(ParityError):
        bundle_lib.write_bundle(make_job(det, "onnx", cache=conversions["distilled", "onnx"]), tmp_path)
    assert list((tmp_path / "toy").iterdir()) == []


def assert_same_model_files(first: dict, second: dict, target: str) -> None:
    """Byte-identical files; CoreML's package Manifest.json holds random item identifiers, so there the model spec
    and weights are compared."""
    assert set(first) == set(second), target
    stable = {k for k in first if not k.endswith("detector.mlpackage/Manifest.json")}
    assert {k: first[k]["sha256"] for k in stable} == {k: second[k]["sha256"] for k in stable}, target


@pytest.mark.parametrize("target", [t if t in ("onnx", "openvino") else pytest.param(t, marks=pytest.mark.slow)
                                    for t in TARGETS])
def test_exports_are_deterministic(rung_bundle, tmp_path, target):
    """Each target's exporter, run twice on the same detector, writes the same bundle. The graph is the distilled
    rung's (DINOv3, the region head, the region math and the probe), whose bundles the rung test below uses too;
    the exact graph's repeat export is a slow test after this one. ONNX and OpenVINO run by default (OpenVINO's
    node names were the non-determinism found); CoreML's and TFLite's repeat conversions are behind -m slow."""
    det, _, manifest = rung_bundle("distilled", target)
    _, again = bundle_lib.write_bundle(rung_job(det, "distilled", target), tmp_path)
    assert_same_model_files(manifest["files"], again["files"], target)


@pytest.mark.slow
def test_exact_exports_are_deterministic(detector, bundles, make_job, tmp_path):
    again = export_all(detector, tmp_path, make_job, precisions=("fp32",))
    for target in TARGETS:
        assert_same_model_files(bundles[target, "fp32"][1]["files"], again[target, "fp32"][1]["files"], target)


def test_target_table_drives_resolution_and_docs():
    assert [t.name for t in resolve("all")] == ["onnx", "openvino", "coreml", "tflite", "executorch"]
    with pytest.raises(ValueError, match="unknown target 'tensorrt'"):
        resolve(["tensorrt"])
    table = markdown_table()
    assert all(f"`{name}`" in table for name in TARGETS)


def test_the_target_table_is_the_whole_truth():
    """One row per target: its bundle-format half is the row every bundle ships (device.formats.FORMATS), its
    converters are the export and quantize modules' own functions (named, imported when first called), and the
    CLI's choices are its names."""
    from dfedge import options
    from dfedge.export import onnx as onnx_export
    from dfedge.device.formats import FORMATS
    from dfedge.device.graphs import OUTPUTS
    from dfedge.models.detector import DetectorOutput
    from dfedge.quantize import openvino as openvino_quantize

    assert list(TARGETS) == list(FORMATS)
    for name, target in TARGETS.items():
        assert target.format is FORMATS[name] and target.format.model_file.startswith("detector.")
        assert target.exporter.resolve().__module__ == target.graph_exporter.resolve().__module__ == f"dfedge.export.{name}"
        assert target.quantizer.resolve().__module__ == f"dfedge.quantize.{name}"
    assert TARGETS["onnx"].exporter.resolve() is onnx_export.export
    assert TARGETS["openvino"].quantizer.resolve() is openvino_quantize.quantize
    assert DetectorOutput._fields == OUTPUTS  # the graph's outputs are the device package's names, in its order
    assert options.CHOICES["targets"] == [*TARGETS, "all"] and options.metavar("targets") == "[onnx|openvino|coreml|tflite|executorch|all]"
    assert set(options.CHOICES["precisions"]) == {p for t in TARGETS.values() for p in t.all_precisions}
    from dfedge.targets import BF16, W8A16

    assert set(W8A16) == set(TARGETS)  # every target says whether it has 16-bit activations, and why not
    assert {n for n, t in TARGETS.items() if "w8a16" in t.quantized} == {n for n, why in W8A16.items() if not why.startswith("none")}
    assert set(BF16) == set(TARGETS)  # and whether it has bfloat16: the benchmark's rows read it
    assert {n for n, t in TARGETS.items() if "bf16" in t.all_precisions} == {n for n, how in BF16.items() if how.startswith("bf16")}
    with pytest.raises(ValueError, match="has no precision 'palette4'"):
        TARGETS["onnx"].convert_for("palette4")


def test_docs_table_is_the_generated_one():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "export.md").read_text()
    inside = doc.split("<!-- targets:begin -->")[1].split("<!-- targets:end -->")[0].strip()
    assert inside == markdown_table()


# The default run covers every rung and every target at least once; the rest of the rung x target matrix runs with
# -m slow (it was run in full when the rungs were added). Here: distilled on ONNX, OpenVINO and Core ML, parser-224
# on OpenVINO (the parser rungs are the exact parser's ops at other sizes; the exact graph is converted by every
# target in `bundles`). tests/test_build.py converts the rest by default, with parity and a gate: the distilled head
# on every target (the student build: LiteRT and ExecuTorch are the slowest converters) and lite-head on ONNX.
DEFAULT_PAIRS = {("distilled", "onnx"), ("distilled", "openvino"), ("distilled", "coreml"), ("parser-224", "openvino")}
RUNG_PAIRS = [pytest.param(r, t, marks=() if (r, t) in DEFAULT_PAIRS else pytest.mark.slow, id=f"{r}-{t}")
              for r in ("lite-head", "parser-224", "distilled") for t in TARGETS]


def rung_job(detector, rung: str, target: str, cache: dict | None = None):
    """The fp32 job of a rung's bundle, as the build makes it (folder and options aside)."""
    from dfedge.export.job import Job

    return Job(detector, TARGETS[target], "fp32", rung, f"{target}-fp32", weight_sources(DetectorSpec(region_index=rung)),
               {"region_index": rung}, toy_crops(1), cache={} if cache is None else cache)


@pytest.fixture(scope="session")
def conversions():
    """(rung, target) -> that target's conversion of the rung's detector (write_bundle's cache), kept by
    rung_bundle for tests that export the same graph again; the determinism test always converts afresh."""
    return {}


@pytest.fixture(scope="session")
def rung_bundle(conversions, tmp_path_factory):
    """rung_bundle(rung, target) -> (detector, path, manifest): that rung's fp32 bundle, exported once per session."""
    made = {}

    def get(rung: str, target_name: str):
        if (rung, target_name) not in made:
            det = build_detector(DetectorSpec(preset="toy", region_index=rung))
            job = rung_job(det, rung, target_name, conversions.setdefault((rung, target_name), {}))
            path, manifest = bundle_lib.write_bundle(job, tmp_path_factory.mktemp(rung))
            made[rung, target_name] = det, path, manifest
        return made[rung, target_name]

    return get


@pytest.mark.parametrize("rung,target_name", RUNG_PAIRS)
def test_every_region_index_rung_exports_to_every_target_with_fp32_parity(rung, target_name, rung_bundle):
    """The ladder's rungs are ordinary graphs: the same four exporters, the same parity limits on fresh crops."""
    det, path, manifest = rung_bundle(rung, target_name)
    fresh = toy_crops(1, "test")  # a crop the export never saw (write_bundle checks one more)
    parity = check_parity(torch_runner(det), runner(path, target_name), fresh, "fp32")
    assert manifest["parity"]["ok"] and parity.ok, (target_name, parity)
    assert parity.max_logit_error <= PARITY["fp32"]["max_logit_error"] and parity.masks_identical, (target_name, parity)
    assert manifest["labels"]["region_classes"] == [7, 8, 9]
    assert manifest["export_options"]["region_index"] == rung and manifest["target"] == target_name


def test_executorch_placement_agrees_with_executorchs_own_delegation_report(tmp_path, delegation):
    """The manifest's placement, of a small graph lowered by the kit's ExecuTorch exporter (the face O-Net: its
    PReLUs are not XNNPACK ops, so both sides are non-empty), against ExecuTorch's devtools report of the same
    program; the program then runs in ExecuTorch's runtime as torch does."""
    from executorch.runtime import Runtime

    from dfedge.export import executorch as ee
    from dfedge.models import mtcnn

    net = mtcnn.load_mtcnn()["onet"].eval()
    example = torch.rand(mtcnn.ROW.net("onet").example) * 2 - 1
    ee.export_graph(net, example, tmp_path / "onet.pte", mtcnn.ROW.net("onet").outputs)
    (seen,) = delegation
    where = seen["placement"]
    counts = {op: n for op, n in seen["counts"].items() if not op.startswith(("getitem", "dim_order_ops"))}
    assert where["ops"]["accelerated"] == sum(d for d, _ in counts.values()) > 0
    assert where["ops"]["fallback"] == sum(f for _, f in counts.values())
    assert sum(where["fallback_ops"].values()) == where["ops"]["fallback"]
    gemm = sum(n for op, (n, _) in counts.items() if op in ("aten_convolution_default", "aten_linear_default", "aten_addmm_default", "aten_mm_default"))
    assert gemm > 0 and where["accelerated_flop_share"] == 1.0 and where["gemm_gflops_by_dtype"]["accelerated"]["float32"] > 0
    method = Runtime.get().load_program(str(tmp_path / "onet.pte")).load_method("forward")
    with torch.no_grad():
        for got, want in zip(method.execute([example]), net(example)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_executorch_core_ml_delegate_lowers_here_and_runs_on_apple_only(tmp_path, delegation):
    """The Core ML delegate converts (coremltools) and lowers on Linux; the placement is ExecuTorch's own report of
    what it took; ExecuTorch's runtime here has no Core ML backend, so the program's forward does not load."""
    from executorch.runtime import Runtime

    from dfedge.export import executorch as ee
    from dfedge.models import mtcnn

    net = mtcnn.load_mtcnn()["onet"].eval()
    example = torch.rand(mtcnn.ROW.net("onet").example) * 2 - 1
    path = tmp_path / "onet-coreml.pte"
    where = ee.export_coreml(net, example, path, {"dfedge.name": "toy"})
    (seen,) = delegation
    assert seen["placement"] == where and where["accelerator"] == "Core ML delegate"
    delegated = sum(d for op, (d, _) in seen["counts"].items() if not op.startswith(("getitem", "dim_order_ops")))
    assert where["ops"]["accelerated"] == delegated > 0 and where["accelerated_flop_share"] == 1.0
    assert ee.read_metadata(path) == {"dfedge.name": "toy"} and path.stat().st_size > 1e5
    with pytest.raises(RuntimeError, match="Failed to load method forward, error: 0x:20"):  # 0x20: NotFound (the backend)
        Runtime.get().load_program(str(path)).load_method("forward")


def test_openvino_bf16_runs_in_bfloat16_where_the_cpu_has_it(detector, make_job, tmp_path):
    """The bf16 rung is the fp32 IR with bfloat16 inference precision in its runtime options: where the CPU has
    bfloat16 (AVX-512 BF16 or AMX) the bundle passes bf16 parity and its placement shows bfloat16 kernels; elsewhere
    it is refused with the reason, never shipped as something that runs in float32."""
    import openvino as ov

    from dfedge.eval.gate import GateError

    job = make_job(detector, "openvino", "bf16")
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        with pytest.raises(GateError, match="not supported here: this CPU has no bfloat16"):
            bundle_lib.write_bundle(job, tmp_path)
        assert not (tmp_path / job.name / job.folder).exists()
        return
    folder, manifest = bundle_lib.write_bundle(job, tmp_path)
    assert manifest["runtime_options"] == {"CPU": {"INFERENCE_PRECISION_HINT": "bf16"}} == verify(folder)["runtime_options"]
    assert manifest["parity"]["max_logit_error"] <= PARITY["bf16"]["max_logit_error"] and manifest["parity"]["ok"]
    placement = manifest["placement"]
    assert placement["options"] == manifest["runtime_options"]
    assert placement["gemm_gflops_by_dtype"]["accelerated"].get("bfloat16", 0) > 0.5 * sum(placement["gflops"].values())
