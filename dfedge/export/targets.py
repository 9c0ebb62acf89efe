"""The one table of export targets: it drives the CLI, the bundles, the parity checks, the benchmark and docs."""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    module: str  # dfedge.export.<module> holds export(...) and load(...)
    model_file: str  # the file (or package) a bundle's runtime opens
    runtime: str
    converter: str  # the package whose version the manifest records
    precisions: tuple[str, ...]
    input_layout: str  # of the exported graph's input tensor
    note: str
    quantized: tuple[str, ...] = ()  # rungs below fp16, written by `dfedge quantize` (dfedge/quantize/<module>.py)

    def exporter(self):
        return importlib.import_module(f"dfedge.export.{self.module}")


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("onnx", "onnx", "detector.onnx", "onnxruntime", "onnx", ("fp32", "fp16"), "NCHW",
               "dynamo exporter, opset 20, static shapes; fp16 keeps float32 input/outputs and the input normalisation",
               ("int8", "int8-weights")),
        Target("openvino", "openvino", "detector.xml", "openvino", "openvino", ("fp32", "fp16"), "NCHW",
               "IR from the torch module; fp16 = FP16-compressed weights except the input normalisation, f32 compute on CPU",
               ("int8", "int8-weights", "int4-weights", "mixed")),
        Target("coreml", "coreml", "detector.mlpackage", "coremltools (macOS predict; MIL interpreter elsewhere)",
               "coremltools", ("fp32", "fp16"), "NCHW",
               "ML program, iOS17/macOS14; fp16 = FP16 compute except input normalisation, residual adds and the probe head",
               ("int8-weights", "palette6", "palette4")),
        Target("tflite", "tflite", "detector.tflite", "ai_edge_litert", "litert-torch", ("fp32", "fp16"), "NHWC",
               "litert-torch; NHWC input as mobile cameras deliver; fp16 = float16 weights (ai-edge-quantizer)",
               ("int8-weights", "int8")),
    )
}

# Parity thresholds against the torch FP32 reference, per precision, on the logit error |Δlogit| / max(1, |logit|):
# absolute near the decision threshold, relative for confident faces (fp16 keeps ~3 significant digits, so a toy
# face with logit 19.4 is off by 0.019 on CoreML fp16 while every logit under 6 stays within 0.005).
# Quantized rungs have no logit limit: their gate is the AUC drift on a validation split, plus this mask agreement.
PARITY = {"fp32": {"max_logit_error": 1e-4, "mask_agreement": 1.0}, "fp16": {"max_logit_error": 1e-2, "mask_agreement": 0.99}}
QUANTIZED_PARITY = {"max_logit_error": None, "mask_agreement": 0.99}


def parity_limits(precision: str) -> dict:
    return PARITY.get(precision, QUANTIZED_PARITY)


def resolve(names: list[str] | str) -> list[Target]:
    names = [names] if isinstance(names, str) else list(names)
    if "all" in names:
        return list(TARGETS.values())
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise ValueError(f"unknown target '{unknown[0]}' (known: {', '.join(TARGETS)}, all)")
    return [TARGETS[n] for n in names]


def markdown_table() -> str:
    """The docs table of targets, generated from TARGETS."""
    rows = ["| target | model file | runtime | precisions | quantized (`dfedge quantize`) | input | notes |",
            "|---|---|---|---|---|---|---|"]
    for t in TARGETS.values():
        rows.append(f"| `{t.name}` | `{t.model_file}` | {t.runtime} | {', '.join(t.precisions)} | {', '.join(t.quantized)} "
                    f"| {t.input_layout} | {t.note} |")
    return "\n".join(rows)
