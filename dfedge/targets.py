"""The one table of targets: one row per target drives the exporters and quantizers, the bundles and their
runtimes, the parity checks, the build's plan, the CLI's choices and help, the benchmark and the docs table.

A row is the bundle-format half (`dfedge/device/formats/` FORMATS: model file, input name and layout, runtime
package, session, capabilities; it ships inside every bundle) and the conversion half here: exporter, quantizer, precisions.
Adding a target is one row here, one exporter module (export/<name>.py), one opener and format row in
the device package (dfedge/device/formats/<name>.py), and, for quantized rungs, one quantizer module (docs/architecture.md).
A row names its converters (`Lazy`: imported when first called), so the table itself imports no converter and no
torch: the command line's choices and help and the docs table read it at once.
"""

from __future__ import annotations

from .device.formats import FORMATS
from .export.row import ONNX_OPSET, Target
from .models.lazy import Lazy

EXPORTED = ("fp32", "fp16")

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(FORMATS["onnx"], Lazy("dfedge.export.onnx", "export"), Lazy("dfedge.export.onnx", "export_graph"),
               EXPORTED, "onnx",
               f"dynamo exporter, opset {ONNX_OPSET}, static shapes; fp16 keeps float32 input/outputs and the "
               "input normalisation",
               Lazy("dfedge.quantize.onnx", "quantize"), ("int8", "int8-weights", "w8a16")),
        Target(FORMATS["openvino"],
               Lazy("dfedge.export.openvino", "export"), Lazy("dfedge.export.openvino", "export_graph"),
               (*EXPORTED, "bf16"), "openvino",
               "IR from the torch module; fp16 = FP16-compressed weights except the input normalisation, f32 compute on CPU; "
               "bf16 = the fp32 IR with bfloat16 inference precision in its runtime options (CPUs with AVX-512 BF16 or "
               "AMX; refused elsewhere)",
               Lazy("dfedge.quantize.openvino", "quantize"), ("int8", "int8-weights", "int4-weights", "mixed")),
        Target(FORMATS["coreml"], Lazy("dfedge.export.coreml", "export"), Lazy("dfedge.export.coreml", "export_graph"),
               EXPORTED, "coremltools",
               "ML program, iOS17/macOS14; fp16 = FP16 compute except input normalisation, residual adds and the probe head",
               Lazy("dfedge.quantize.coreml", "quantize"), ("int8-weights", "palette6", "palette4")),
        Target(FORMATS["tflite"], Lazy("dfedge.export.tflite", "export"), Lazy("dfedge.export.tflite", "export_graph"),
               EXPORTED, "litert-torch",
               "litert-torch; NHWC input as mobile cameras deliver; 3×3 convolutions written as nine shifted 1×1 ones (`export/rewrite.py`: XNNPACK runs those at GEMM speed, docs/benchmarks.md); fp16 = float16 weights (ai-edge-quantizer)",
               Lazy("dfedge.quantize.tflite", "quantize"), ("int8-weights", "int8", "w8a16")),
        Target(FORMATS["executorch"],
               Lazy("dfedge.export.executorch", "export"), Lazy("dfedge.export.executorch", "export_graph"),
               EXPORTED, "executorch",
               "torch.export lowered to the XNNPACK delegate, static shapes; fp16 = DINOv3's attention and MLPs and the "
               "parser in float16, its residual stream and patch embedding, the input normalisation and the region math "
               "float32; "
               "int8 = XNNPACK quantizer + NNCF ranges; placement (delegated vs portable ops) in the manifest",
               Lazy("dfedge.quantize.executorch", "quantize"), ("int8",)),
    )
}
# 16-bit activations (w8a16) per target: the recipe where the target has the rung, else why it has none (checked
# with these package versions; a test keeps one entry per target, and it names the recipe exactly when the row has it)
W8A16 = {
    "onnx": "ONNX Runtime quantize_static QDQ: int8 weights, uint16 activations (com.microsoft Q/DQ), the QDQ form "
            "NPU providers such as QNN take (not run here); the CPU provider runs float GEMMs between the Q/DQ pairs "
            "(placement says so)",
    "openvino": "none: NNCF's OpenVINO quantizer writes 8-bit activations and the CPU plugin has no int16 GEMM kernels; "
                "its 16-bit rungs are fp16 and bf16 (float)",
    "coreml": "none in integer: coremltools' activation quantization is int8 and needs macOS to calibrate; int8-weights "
              "runs on fp16 activations (weights int8, activations float16: what the Neural Engine runs)",
    "tflite": "ai-edge-quantizer static_wi8_ai16: LiteRT's int16x8 kernels (XNNPACK has none: built-in kernels); "
              "the region math, the parser's constant poolings and TRANSPOSE_CONV float (LiteRT rejects what the "
              "recipe writes for the last two)",
    "executorch": "none: the XNNPACK quantizer has no 16-bit activation config and XNNPACK no int16 GEMM kernels "
                  "(Qualcomm's QNN quantizer has 16a8w, but its lowering needs the QNN SDK)",
}
# bfloat16 per target: how the target runs it where it has the rung, else why it has none (checked with these
# package versions; a test keeps one entry per target and it starts with "bf16" exactly when the row has the rung)
BF16 = {
    "onnx": "none: ONNX Runtime's CPU provider has no bfloat16 MatMul or Gemm kernel (NOT_IMPLEMENTED when a session "
            "is made) and ONNX Conv takes no bfloat16",
    "openvino": "bf16: the fp32 IR with INFERENCE_PRECISION_HINT bf16 (CPUs with AVX-512 BF16 or AMX); refused "
                "elsewhere by the gate as not supported on the host",
    "coreml": "none: Core ML computes in float32 or float16 (the fp16 rung); it has no bfloat16 compute precision",
    "tflite": "none: LiteRT's built-in and XNNPACK kernels have no bfloat16 path (its 16-bit float rung is fp16)",
    "executorch": "none: the XNNPACK delegate lowers fp32, fp16 and quantized graphs only; bfloat16 ops would fall "
                  "back to the portable kernels",
}
QUANTIZED = tuple(dict.fromkeys(p for t in TARGETS.values() for p in t.quantized))  # every rung below fp16, in order
PRECISIONS = tuple(dict.fromkeys(p for t in TARGETS.values() for p in t.all_precisions))  # every precision, in order


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
    rows = ["| target | model file | input | runtime | precisions | quantized (`dfedge quantize`) | notes | 16-bit activations (w8a16) |",
            "|---|---|---|---|---|---|---|---|"]
    for t in TARGETS.values():
        f = t.format
        rows.append(f"| `{t.name}` | `{f.model_file}` | `{f.input_name}` {f.input_layout} | {f.runtime} "
                    f"| {', '.join(t.precisions)} | {', '.join(t.quantized)} | {t.note} | {W8A16[t.name]} |")
    return "\n".join(rows)
