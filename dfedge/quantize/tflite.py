"""TFLite rungs. int8-weights: ai-edge-quantizer's dynamic-range INT8 (int8 weights, float activations: the
dependable one) on the litert-torch FP32 model. int8: static INT8 whose parameters NNCF computes (`quantize_pt2e`
on the torch.export graph, annotated by litert-torch's own PT2E quantizer with the region math left float),
converted by litert-torch; optional, kept only if it loads in the interpreter and passes the gate."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from ..eval.gate import GateError
from ..export import tflite as tflite_export
from ..export.job import Job, Outputs

RECIPES = {"int8-weights": "dynamic_wi8_afp32 on FULLY_CONNECTED and CONV_2D",
           "int8": "litert-torch PT2EQuantizer symmetric per-channel static INT8, region math float",
           "w8a16": "ai-edge-quantizer static_wi8_ai16 (int8 weights, int16 activations: LiteRT's int16x8 kernels); "
                    "region math, constant poolings and TRANSPOSE_CONV float"}
# Float in the w8a16 rung, as ai-edge-quantizer recipe entries ({regex on the op's scope: its output tensor names,
# each followed by ';'}, op): the region math (the Detector's own ops, region_index, probe), and what LiteRT rejects
# as the recipe writes it (ai-edge-quantizer 0.10, measured): BATCH_MATMULs with an int8 constant left operand (the
# parser's constant poolings; the kernel takes int16 x int8 only) and a TRANSPOSE_CONV bias [1, 1, 1, C] quantized
# per channel along its axis 0 ("num_scales must be 1").
W8A16_FLOAT = ((r"Detector_detector;\d+;|_region_index/|_probe/", "*"), (r"ConstantAdaptivePool_\d+;", "BATCH_MATMUL"),
               (".*", "CONV_2D_TRANSPOSE"))


def region_float_quantizer():
    """litert-torch's PT2E quantizer (static, symmetric, per-channel) that leaves the region math unannotated, and
    without its fixed-parameter specs (sigmoid/softmax outputs): NNCF's adapter cannot take them, and the parser
    softmax belongs to the region math anyway."""
    import dataclasses

    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    from .scope import fx_is_float

    class RegionFloatQuantizer(PT2EQuantizer):
        def annotate(self, model):
            import torch

            model = super().annotate(model)
            fixed = (torch.ops.aten.sigmoid.default, torch.ops.aten.softmax.int, torch.ops.aten._softmax.default)
            for node in model.graph.nodes:
                if fx_is_float(node, root="detector"):
                    node.meta.pop("quantization_annotation", None)
                if node.target in fixed:  # float in and out: LiteRT's int8 kernels need a fixed output scale
                    node.meta.pop("quantization_annotation", None)
                    for consumer in node.users:
                        if "quantization_annotation" in consumer.meta:
                            consumer.meta["quantization_annotation"].input_qspec_map.pop(node, None)
                    for source in node.all_input_nodes:
                        if "quantization_annotation" in source.meta:
                            source.meta["quantization_annotation"].output_qspec = None
            return model

    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    return RegionFloatQuantizer().set_global(dataclasses.replace(config, fixed_qparams=None))


def nncf_static_int8(job: Job, path: Path) -> str:
    """NNCF's range estimation (and fast bias correction) on the litert-torch quantizer's annotation -> .tflite."""
    import litert_torch
    import nncf
    import torch
    from litert_torch.quantize.quant_config import QuantConfig
    from nncf.experimental.torch.fx import quantize_pt2e

    calib = job.calibration
    wrapped = Outputs(job.detector, nhwc=True).eval()
    nhwc = tflite_export.nhwc_example(job)
    quantizer = region_float_quantizer()
    graph = torch.export.export(wrapped, nhwc).module()
    data = nncf.Dataset([torch.from_numpy(x.transpose(0, 2, 3, 1).copy()) for x in calib.items()])
    with torch.no_grad():
        quantized = quantize_pt2e(graph, quantizer, data, subset_size=len(calib.images), fold_quantize=False)
    quantized.training = False  # exported from the eval-mode module; litert-torch reads only this flag
    litert_torch.convert(quantized, nhwc, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(path))
    return f"nncf {nncf.__version__} quantize_pt2e + litert-torch {version('litert-torch')} PT2EQuantizer"


FLOAT_REGION_MATH = {"int8": "detector.FLOAT_SUBMODULES and the Detector's own ops left unannotated",
                     "int8-weights": "weights only: activations are float",
                     "w8a16": "the Detector's own ops, region_index and probe left float (recipe entries on their scopes)"}


def static_w8a16(job: Job, path: Path, out_dir: Path) -> str:
    """ai-edge-quantizer's int8-weight/int16-activation recipe on the litert-torch FP32 model, its activation
    ranges calibrated on the job's crops (NHWC, through the model's own signature)."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    path.write_bytes(tflite_export.fp32_model(job, out_dir))
    signature = Interpreter(model_path=str(path)).get_signature_list()["serving_default"]
    (source,) = signature["inputs"]
    data = {"serving_default": [{source: x.transpose(0, 2, 3, 1).copy()} for x in job.calibration.items()]}
    float_ops = [{"regex": regex, "operation": op, "algorithm_key": "no_quantize"} for regex, op in W8A16_FLOAT]
    q = quantizer.Quantizer(str(path), recipe.static_wi8_ai16() + float_ops)
    q.quantize(q.calibrate(data, num_threads=1)).export_model(str(path), overwrite=True)
    return f"ai-edge-quantizer {version('ai-edge-quantizer')} static_wi8_ai16"


def quantize(job: Job, out_dir: Path, report: dict) -> list[Path]:
    from ai_edge_litert.interpreter import Interpreter

    precision = job.precision
    if precision not in RECIPES:
        raise ValueError(f"tflite has no quantized rung '{precision}'")
    path = out_dir / tflite_export.FORMAT.model_file
    if precision == "int8":
        tool = nncf_static_int8(job, path)
    elif precision == "w8a16":
        tool = static_w8a16(job, path, out_dir)
    else:
        from ai_edge_quantizer import quantizer, recipe_manager
        from ai_edge_quantizer.qtyping import TFLOperationName

        path.write_bytes(tflite_export.fp32_model(job, out_dir))
        # the interpreter has no hybrid kernel for a BATCH_MATMUL with int8 constants (the pooling matrices)
        manager = recipe_manager.RecipeManager()
        for op in (TFLOperationName.FULLY_CONNECTED, TFLOperationName.CONV_2D):
            manager.add_dynamic_config(regex=".*", operation_name=op, num_bits=8)
        quantizer.Quantizer(str(path), manager.get_quantization_recipe()).quantize().export_model(str(path), overwrite=True)
        tool = f"ai-edge-quantizer {version('ai-edge-quantizer')}"
    try:
        Interpreter(model_path=str(path)).allocate_tensors()
    except (RuntimeError, ValueError) as e:  # full-integer transformers are fragile in LiteRT: an optional rung
        raise GateError(f"not kept: the INT8 graph does not load in the LiteRT interpreter ({str(e).splitlines()[0][:120]})") from e
    report.update(tool=tool, settings={"recipe": RECIPES[precision]},
                  calibration=job.calibration.record() if precision != "int8-weights" else None,
                  float_region_math=FLOAT_REGION_MATH[precision])
    return tflite_export.save(path, job.metadata)
