"""The OpenVINO `mixed` rung: the accuracy-restorer settings reach NNCF, the mask path (parser) is weight-only INT8
with float activations while DINOv3 is INT8, NNCF ranks on per-item outputs (NMSE), and a rung no validated model
of which is within the budget is refused before a bundle is written."""

import pytest
import torch

from dfedge.data import calibration as calib_lib
from dfedge.data.sources import open_set
from dfedge.eval.gate import Gate, GateError, Validation
from dfedge.eval.validate import Budget
from dfedge.models.factory import DetectorSpec, build_detector
from dfedge.runtimes import torch_runner

pytestmark = pytest.mark.heavy  # minutes of building or training: .ci/run's second command (-m heavy)


def test_mixed_rung_settings_scope_and_fail_fast(make_job, monkeypatch, tmp_path):
    import nncf
    import openvino as ov

    from dfedge.quantize import openvino as q

    detector = build_detector(DetectorSpec(preset="toy"))
    example = torch.zeros(1, 3, 448, 448)
    # the converted model the quantizer starts from, traced without torch's re-run check (same graph, node names
    # included; the time limit of this test is the reason)
    traced = torch.jit.trace(detector, example, check_trace=False, strict=False)
    cache = {"openvino": ov.convert_model(traced, example_input=example, input=[("image", list(example.shape))])}
    with pytest.warns(UserWarning, match="only 4 crops"):
        calib = calib_lib.calibration_set("toy:train:4", 4)
    validation = Validation.build(torch_runner(detector), detector.probe.info.threshold, open_set("toy:val:12", "mouth"))
    items = validation.items()
    assert {label for _, label in items} == {0, 1}
    # budget -1: no model can be within it (the AUC would have to rise by 100 pp), so the rung must be refused right
    # after accuracy control
    job = make_job(detector, "openvino", "mixed", calibration=calib, gate=Gate(validation, Budget(-1.0)),
                   accuracy_iterations=2, cache=cache)

    seen = {}
    real = nncf.quantize_with_accuracy_control

    def recording(*args, **kwargs):  # the real NNCF call, its arguments and result kept for the assertions below
        seen.update(kwargs)
        seen["result"] = real(*args, **kwargs)
        return seen["result"]

    monkeypatch.setattr(nncf, "quantize_with_accuracy_control", recording)
    report = {}
    with pytest.raises(GateError, match="accuracy control: no model it validated is within the budget"):
        q.quantize(job, tmp_path, report)
    assert not list(tmp_path.iterdir())  # refused before anything was saved

    restorer = seen["advanced_accuracy_restorer_parameters"]
    ranked = min(len(items), q.RANKING_SUBSET_SIZE)
    assert (restorer.max_num_iterations, restorer.ranking_subset_size, restorer.num_ranking_workers) == (2, ranked, 1)
    # NNCF's target: a share of the gate's budget, never below zero (a negative budget demands a gain it cannot aim at)
    assert seen["max_drop"] == 0.0 and seen["drop_type"] == nncf.DropType.ABSOLUTE and seen["subset_size"] == 4
    assert "__module.parser.head.head.conv_seg/aten::_convolution/Convolution" in seen["ignored_scope"].names

    quantized, parser = q.quantized_ops(seen["result"]), q.module_ops(seen["result"], ["parser"])
    # conversion names the parser's convolutions fused with their BatchNorm "Multiply_n…": still parser ops
    fused = {n for n in parser if not n.startswith("__module.parser") and n in report["weight_only_int8"]}
    assert fused and any(n.startswith("__module.parser.head") for n in report["weight_only_int8"])
    assert set(report["weight_only_int8"]) <= parser  # the mask path: INT8 weights ...
    assert quantized and not quantized & parser  # ... float activations
    assert any(n.startswith("__module.dinov3.blocks") for n in quantized)  # DINOv3 INT8
    assert not set(report["reverted_to_float"]) & quantized
    assert report["quantized_int8"] >= len(quantized) and len(report["accuracy"]["validated_auc"]) >= 2
    assert report["settings"]["ranking_subset_size"] == ranked
    key = ["nncf", "quantization", "advanced_accuracy_restorer_parameters"]  # no temporary path left in the IR
    assert "'intermediate_model_dir': None" in seen["result"].get_rt_info(key).astype(str)

    # the validation function gives NNCF every output per item, so it ranks by their NMSE, not a one-item AUC
    auc, outputs = q.auc_validation()(ov.compile_model(seen["result"], "CPU"), items)
    assert 0.0 <= auc <= 1.0 and len(outputs) == len(items) and len(outputs[0]) == len(seen["result"].outputs)
