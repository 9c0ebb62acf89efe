"""OpenVINO IR via `openvino.convert_model` from the torch module, fixed input shape, FP16 weight compression."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..eval.gate import GateError
from ..device.graphs import OUTPUTS
from ..models.detector import FP32_CONSTANTS
from ..device.formats import FORMATS
from .job import Job

FORMAT = FORMATS["openvino"]


def export(job: Job, out_dir: Path, report: dict) -> list[Path]:
    import openvino as ov

    model = converted(job)
    settings = {"input": [FORMAT.input_name, list(job.example.shape)]}
    if job.precision == "fp16":
        _compress_to_fp16(model, [getattr(job.detector, n).numpy() for n in FP32_CONSTANTS])
        settings["fp16"] = "FP16-compressed weights except the input normalisation"
    elif job.precision == "bf16":
        # the fp32 IR, run with OpenVINO's bfloat16 inference precision (AVX-512 BF16 or AMX): the bundle's runtime
        # options say so, and parity, the gate, bench.py and dfedge.load apply them
        capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if "BF16" not in capabilities:
            raise GateError(f"not supported here: this CPU has no bfloat16 in OpenVINO (capabilities: {', '.join(capabilities)})")
        report["runtime_options"] = {"CPU": {"INFERENCE_PRECISION_HINT": "bf16"}}
        settings["bf16"] = "fp32 IR; CPU inference precision bfloat16 (runtime_options)"
    report.update(tool=f"openvino {ov.__version__} convert_model", settings=settings)
    return save(model, out_dir, job.metadata)


def converted(job: Job):
    """A fresh copy of the converted fp32 model with stable node names and named inputs/outputs."""
    import openvino as ov

    if "openvino" not in job.cache:
        shape = list(job.example.shape)
        job.cache["openvino"] = ov.convert_model(job.detector, example_input=job.example, input=[(FORMAT.input_name, shape)])
    model = job.cache["openvino"].clone()
    _stable_names(model)
    model.inputs[0].get_tensor().set_names({FORMAT.input_name})
    for output, name in zip(model.outputs, OUTPUTS):
        output.get_tensor().set_names({name})
    return model


def save(model, out_dir: Path, metadata: dict[str, str]) -> list[Path]:
    import openvino as ov

    for key, value in metadata.items():
        model.set_rt_info(value, ["dfedge", key])
    xml = out_dir / FORMAT.model_file
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return [xml, xml.with_suffix(".bin")]


def _compress_to_fp16(model, keep: list[np.ndarray]) -> None:
    """FP16 weights, except the constants in `keep`, which go back to fp32 (see detector.FP32_CONSTANTS).
    OpenVINO's own opt-out marker is not honoured by this path, so those constants are found by value."""
    import openvino as ov
    import openvino.opset13 as ops
    from openvino._offline_transformations import compress_model_transformation

    compress_model_transformation(model)
    for node in model.get_ordered_ops():
        source = node.input_value(0).get_node() if node.get_type_name() == "Convert" else None
        if source is None or source.get_type_name() != "Constant" or source.get_element_type() != ov.Type.f16:
            continue
        data = source.get_data()
        for value in keep:
            if data.shape == value.shape and np.array_equal(data, value.astype(np.float16)):
                exact = ops.constant(value.astype(np.float32))
                exact.set_friendly_name(node.get_friendly_name())
                node.output(0).replace(exact.output(0))


def _stable_names(model) -> None:
    """OpenVINO names unnamed nodes from a process-wide counter ("Constant_17539"), so two exports in one process
    would differ; renumber those by graph order to keep the IR byte-identical."""
    model.set_friendly_name("dfedge_detector")
    for i, node in enumerate(model.get_ordered_ops()):
        name = node.get_friendly_name()
        if re.fullmatch(r"[A-Za-z]+_\d+", name):
            node.set_friendly_name(f"{name.rsplit('_', 1)[0]}_n{i}")


def export_graph(module, example, path: Path, names: tuple[str, ...], dynamic_hw: bool = False) -> list[Path]:
    """A small fp32 graph (the face front end's nets): input `x` NCHW, outputs `names`; height and width free when
    `dynamic_hw`."""
    import openvino as ov

    shape = [1, 3, -1, -1] if dynamic_hw else list(example.shape)
    model = ov.convert_model(module.eval(), example_input=example, input=[("x", shape)])
    _stable_names(model)
    for output, name in zip(model.outputs, names):
        output.get_tensor().set_names({name})
    ov.save_model(model, str(path), compress_to_fp16=False)
    return [path, path.with_suffix(".bin")]
