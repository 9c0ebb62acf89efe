"""Quantized rungs: the region math stays float, calibration sizes are honoured, the gate refuses what fails it."""

import json
import re

import pytest

from dfedge.data import calibration as calib_lib
from dfedge.models.factory import DetectorSpec, build_detector
from dfedge.quantize.scope import onnx_float_nodes, openvino_patterns
from dfedge.device.bundle import placement


@pytest.fixture(scope="module")
def detector():
    return build_detector(DetectorSpec(preset="toy"))


CALIB = 8  # fewer crops than the set holds: the size asked for, not the set's, is what NNCF gets


@pytest.fixture(scope="module")
def calib():
    with pytest.warns(UserWarning, match=f"only {CALIB} crops"):
        return calib_lib.calibration_set("toy:train:12", CALIB)


def recorded(monkeypatch, owner, name: str) -> dict:
    """Keep the keyword arguments of every call to owner.name; the real function still runs."""
    seen, real = {}, getattr(owner, name)

    def recording(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, recording)
    return seen


def test_calibration_takes_the_size_asked_for(calib):
    assert calib.images.shape == (CALIB, 3, 448, 448) and len(calib.items()) == CALIB
    assert calib.record()["size"] == CALIB and len(calib.record()["sha256"]) == 64
    assert calib.record()["data"] == f"toy:train:12:mouth (first {CALIB})"


@pytest.mark.heavy
def test_openvino_int8_keeps_the_region_math_float(detector, calib, make_job, monkeypatch, tmp_path):
    import nncf
    import openvino as ov

    from dfedge.quantize import openvino as q

    seen = recorded(monkeypatch, nncf, "quantize")
    report = {}
    q.quantize(make_job(detector, "openvino", "int8", calibration=calib), tmp_path, report)
    assert seen["subset_size"] == CALIB and report["calibration"]["size"] == CALIB
    model = ov.Core().read_model(str(tmp_path / "detector.xml"))
    quantized = q.quantized_ops(model)
    float_ops = [n.get_friendly_name() for n in model.get_ordered_ops()
                 if any(re.match(p, n.get_friendly_name()) for p in openvino_patterns())]
    kinds = {n.get_type_name() for n in model.get_ordered_ops() if n.get_friendly_name() in float_ops}
    assert {"Softmax", "MatMul", "GreaterEqual", "Sigmoid"} <= kinds  # the region math is really in that set
    assert not quantized & set(float_ops)
    assert any(n.startswith("__module.dinov3.blocks") for n in quantized)  # ... and the backbones are INT8
    assert any(n.startswith("__module.parser.backbone") for n in quantized)
    # where it runs: OpenVINO's executed graph, compiled with the bundle's options, against the IR's quantized ops:
    # each GEMM layer built from a quantized MatMul/Convolution runs in int8/uint8, and they hold most GEMM FLOPs
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    infos = [{k: v.value for k, v in op.get_rt_info().items()} for op in compiled.get_runtime_model().get_ordered_ops()]
    runtime = {i["originalLayersNames"]: i["runtimePrecision"] for i in infos
               if i["layerType"] in ("FullyConnected", "Convolution", "MatMul")}
    gemms_of_quantized = [p for names, p in runtime.items() if set(names.split(",")) & quantized]
    # most in int8/uint8; the CPU plugin picks per ISA, and without VNNI (AVX2 only) it runs some of them in f32
    int8_layers = [p for p in gemms_of_quantized if p.lower() in ("i8", "u8")]
    assert gemms_of_quantized and {p.lower() for p in gemms_of_quantized} <= {"i8", "u8", "f32"}, runtime
    assert len(int8_layers) >= 0.5 * len(gemms_of_quantized), runtime
    where = placement(tmp_path, "openvino")
    int8 = sum(v for k, v in where["gemm_gflops_by_dtype"]["accelerated"].items() if k in ("int8", "uint8"))
    assert int8 > 0.5 * sum(where["gflops"].values()) and where["options"] == {"CPU": {"INFERENCE_PRECISION_HINT": "f32"}}


@pytest.mark.heavy
def test_onnx_int8_keeps_the_region_math_float(detector, calib, make_job, tmp_path, onnxruntime_view):
    import onnx

    from dfedge.quantize import onnx as q

    report = {}
    q.quantize(make_job(detector, "onnx", "int8", calibration=calib), tmp_path, report)
    model = onnx.load(str(tmp_path / "detector.onnx"))
    producer = {o: n for n in model.graph.node for o in n.output}
    float_nodes = set(onnx_float_nodes(model))
    dq_fed = {n.name for n in model.graph.node if any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear"
                                                     for i in n.input)}
    assert {n.op_type for n in model.graph.node if n.name in float_nodes} >= {"Softmax", "MatMul", "Sigmoid"}
    assert not dq_fed & float_nodes
    assert any(n.op_type in ("MatMul", "Gemm") for n in model.graph.node if n.name in dq_fed)
    assert report["calibration"]["size"] == CALIB
    # where it runs: ONNX Runtime fuses the Q/DQ pairs into integer GEMM kernels (its own optimised graph agrees)
    where = placement(tmp_path, "onnx")
    assert onnxruntime_view(tmp_path / "detector.onnx", where)
    int8 = sum(v for k, v in where["gemm_gflops_by_dtype"]["accelerated"].items() if k in ("int8", "uint8"))
    assert 0.05 * sum(where["gflops"].values()) < int8  # (13 % of the GEMM FLOPs on the toy graph: the rest
    # dequantize to float kernels, e.g. Gemm and Conv with Q/DQ weights; docs/quantize.md)


@pytest.mark.heavy
def test_onnx_w8a16_has_16_bit_activations_and_runs_float_kernels_on_a_cpu(detector, calib, make_job, tmp_path,
                                                                         onnxruntime_view):
    import onnx

    from dfedge.quantize import onnx as q

    report = {}
    q.quantize(make_job(detector, "onnx", "w8a16", calibration=calib), tmp_path, report)
    model = onnx.load(str(tmp_path / "detector.onnx"))
    init = {t.name: t for t in model.graph.initializer}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize and all(n.domain == "com.microsoft" for n in quantize)
    zero_points = {init[n.input[2]].data_type for n in quantize if len(n.input) > 2 and n.input[2] in init}
    assert zero_points == {onnx.TensorProto.UINT16}  # 16-bit activations
    weights = {init[n.input[0]].data_type for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in init}
    assert onnx.TensorProto.INT8 in weights
    producer = {o: n for n in model.graph.node for o in n.output}
    float_nodes = set(onnx_float_nodes(model))
    assert not {n.name for n in model.graph.node if n.name in float_nodes and any(
        producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input)}
    # no 16-bit GEMM kernel in ONNX Runtime's CPU provider: every GEMM runs float between the Q/DQ pairs (the rung
    # is for NPU providers), and the placement report says so
    where = placement(tmp_path, "onnx")
    assert onnxruntime_view(tmp_path / "detector.onnx", where) == set()
    assert set(where["gemm_gflops_by_dtype"]["accelerated"]) == {"float32"}
    assert report["settings"]["activations"] == "uint16" and report["calibration"]["size"] == CALIB


@pytest.mark.heavy
def test_tflite_int8_is_nncf_calibrated_and_keeps_the_region_math_float(detector, calib, make_job, monkeypatch, tmp_path):
    import nncf.experimental.torch.fx as nncf_fx
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from dfedge.quantize import tflite as q

    seen = recorded(monkeypatch, nncf_fx, "quantize_pt2e")
    report = {}
    q.quantize(make_job(detector, "tflite", "int8", calibration=calib), tmp_path, report)
    assert seen["subset_size"] == CALIB and report["calibration"]["size"] == CALIB
    assert report["tool"].startswith("nncf ") and "PT2EQuantizer" in report["tool"]
    # the graph as written (no delegate folds ops away); each tensor name keeps the module path it came from
    interp = Interpreter(model_path=str(tmp_path / "detector.tflite"),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    region, backbones = {}, {}
    for op in interp._get_ops_details():
        where = re.search(r"Detector_detector(?:/([^/;]*))?", tensors[op["outputs"][0]]["name"].split(";")[0])
        if where is None or op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        inputs = {tensors[i]["dtype"].__name__ for i in op["inputs"] if i in tensors}
        sub = where.group(1) or ""
        target = region if sub == "" or sub.endswith(("_region_index", "_probe")) else backbones
        target.setdefault(op["op_name"], set()).update(inputs)
    assert {"SOFTMAX", "GREATER_EQUAL", "FULLY_CONNECTED", "SUM"} <= set(region)  # the region math is in that set
    assert not any("int8" in dtypes for dtypes in region.values())
    assert "int8" in backbones["FULLY_CONNECTED"] and "int8" in backbones["CONV_2D"]  # ... and the backbones INT8


@pytest.mark.slow  # a minute (two XNNPACK lowerings of the detector); the fast check of placement is in tests/export
def test_executorch_int8_is_nncf_calibrated_delegated_and_keeps_the_region_math_float(detector, calib, make_job,
                                                                                       monkeypatch, tmp_path, delegation):
    """The placement the manifest records, checked against ExecuTorch's own delegation report of the same lowered
    program: every backbone GEMM and convolution runs INT8 (or, for the parser's transposed convolutions, float) in
    the XNNPACK delegate; the region math stays float; the program loads and runs in ExecuTorch's runtime."""
    import nncf.experimental.torch.fx as nncf_fx
    import torch

    from dfedge.quantize import executorch as q

    seen = recorded(monkeypatch, nncf_fx, "quantize_pt2e")
    report = {}
    q.quantize(make_job(detector, "executorch", "int8", calibration=calib), tmp_path, report)
    assert seen["subset_size"] == CALIB and report["calibration"]["size"] == CALIB and "XNNPACKQuantizer" in report["tool"]
    ((placement, counts),) = [(d["placement"], d["counts"]) for d in delegation]
    assert report["placement"] == placement
    compute = {op: n for op, n in counts.items() if not op.startswith(("getitem", "dim_order_ops", "quantized_decomposed"))}
    assert placement["ops"]["accelerated"] == sum(d for d, _ in compute.values())
    assert placement["ops"]["fallback"] == sum(f for _, f in compute.values())
    assert placement["quantize_steps"]["accelerated"] == sum(d for op, (d, _) in counts.items() if op.startswith("quantized_decomposed"))
    by_dtype = placement["gemm_gflops_by_dtype"]
    assert by_dtype["accelerated"]["int8"] > 0.4 * placement["gflops"]["accelerated"]  # the backbones, INT8
    assert set(by_dtype["fallback"]) <= {"float32"}  # nothing quantized falls back to the portable kernels
    assert {"aten.ge.Scalar", "aten.sum.dim_IntList"} <= set(placement["fallback_ops"])  # the region math, float
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(tmp_path / "detector.pte")).load_method("forward")
    outputs = method.execute([torch.from_numpy(calib.images[:1].astype("float32"))])
    assert len(outputs) == 5 and torch.isfinite(outputs[0]).all()


@pytest.mark.heavy
def test_ladder_ships_a_passing_rung_and_refuses_a_failing_one(tmp_path):
    """The budgets are far from the rung's drift, so the verdicts do not depend on the host's kernels: OpenVINO's
    int8-weights drifts by tenths of a pp and by different amounts on different CPUs (−0.05 pp on AVX2, −0.18 pp on
    AVX-512 VNNI, toy:val:200), so it passes 5 pp, which a broken quantizer (AUC near 0.5) would not."""
    from dfedge.build import BuildConfig, run_build

    rung = dict(targets=("openvino",), precisions=("int8-weights",), calib="toy:train:20", calib_size=20,
                bench_runs=0, validation_pack=0, command="quantize")
    (ok,), _ = run_build(BuildConfig(name="pass", dist=tmp_path, data="toy:val:40", max_auc_drop=0.05, **rung))
    assert ok.status == "ok", ok.reason
    manifest = json.loads((tmp_path / "pass" / "openvino-int8-weights" / "manifest.json").read_text())
    assert manifest["gate"]["passed"] and abs(manifest["gate"]["delta_auc"]) <= 0.05
    assert manifest["conversion"]["tool"].startswith("nncf")
    size = sum(f["bytes"] for name, f in manifest["files"].items() if name.startswith("detector."))  # the model, not the front end
    row = next(line for line in (tmp_path / "pass" / "quantize-report.md").read_text().splitlines()
               if line.startswith("| exact | openvino | int8-weights | ✅ |"))
    gate = manifest["gate"]  # on the validation split: max and mean |Δlogit| against torch FP32
    assert f"| {gate['max_abs_logit']:.2e} | {gate['mean_abs_logit']:.2e} | {gate['mask_agreement']:.4f} |" in row

    # an impossible budget (the AUC would have to rise by 10 pp): reported, and no bundle on disk. Any detector and
    # labelled split show that, so the refusal runs on the distilled rung (no FaRL to score) and 16 faces (5 real).
    (refused,), _ = run_build(BuildConfig(name="fail", dist=tmp_path, data="toy:val:16", max_auc_drop=-0.1,
                                          region_indexes=("distilled",), **rung))
    assert refused.status == "gate" and "AUC drop" in refused.reason
    assert not (tmp_path / "fail" / "openvino-int8-weights-distilled").exists()
    assert not list((tmp_path / "fail").glob(".openvino*")) and not list(tmp_path.glob(".fail*"))  # nothing half-written
    assert "| distilled | openvino | int8-weights | ❎ AUC drop" in (tmp_path / "fail" / "quantize-report.md").read_text()
    det = build_detector(DetectorSpec(preset="toy"))
    fp32_bytes = sum(t.numel() * 4 for t in [*det.parameters(), *det.buffers()] if t.is_floating_point())
    assert size < 0.6 * fp32_bytes  # int8 weights really shrank it (constant resampling matrices stay fp32)


def test_ladder_report_lists_what_accuracy_control_reverted():
    from dfedge.build import Row

    record = {"reverted_to_float": ["__module.dinov3.blocks.0.mlp.fc1/aten::linear/MatMul"], "quantized_int8": 16,
              "accuracy": {"reference_auc": 0.9657, "validated_auc": [0.9655, 0.9601, 0.9644]}}
    mixed = Row("exact", "openvino", "mixed", "openvino-mixed", size_mb=2.6, conversion=record)
    plain = Row("exact", "openvino", "int8", "openvino-int8", "gate", "AUC drop 1.62 pp > budget", conversion={"tool": "nncf"})
    text = "\n".join(mixed.accuracy_lines())
    assert "1 of 16 INT8 ops" in text
    assert "`__module.dinov3.blocks.0.mlp.fc1/aten::linear/MatMul`" in text
    assert "initial (FP32, mask-path weights INT8) 0.9655, fully quantized 0.9601, after step 1 0.9644" in text
    assert not plain.accuracy_lines()  # only accuracy-controlled rungs have a record
