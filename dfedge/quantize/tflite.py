"""TFLite rungs with ai-edge-quantizer on the litert-torch FP32 model: dynamic-range INT8 (int8 weights, float
activations: the dependable one) and full static INT8 (optional: kept only if it loads and passes the gate)."""

from __future__ import annotations

from pathlib import Path

from ..export import tflite as tflite_export
from .calibration import Calibration

RECIPES = {"int8-weights": "dynamic_wi8_afp32 on FULLY_CONNECTED and CONV_2D", "int8": "static_wi8_ai8"}


def quantize(detector, example, out_dir: Path, precision: str, metadata: dict, cache: dict | None,
             calib: Calibration, report: dict, accuracy=None) -> list[Path]:
    from importlib.metadata import version

    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    if precision not in RECIPES:
        raise ValueError(f"tflite has no quantized rung '{precision}'")
    (path,) = tflite_export.export(detector, example, out_dir, "fp32", metadata, cache)
    if precision == "int8-weights":
        # the interpreter has no hybrid kernel for a BATCH_MATMUL with int8 constants (the pooling matrices)
        from ai_edge_quantizer import recipe_manager
        from ai_edge_quantizer.qtyping import TFLOperationName

        manager = recipe_manager.RecipeManager()
        for op in (TFLOperationName.FULLY_CONNECTED, TFLOperationName.CONV_2D):
            manager.add_dynamic_config(regex=".*", operation_name=op, num_bits=8)
        q = quantizer.Quantizer(str(path), manager.get_quantization_recipe())
    else:
        q = quantizer.Quantizer(str(path), getattr(recipe, RECIPES[precision])())
    calibration = None
    if precision == "int8":
        (input_name,) = Interpreter(model_path=str(path)).get_signature_list()["serving_default"]["inputs"]
        samples = [{input_name: x.transpose(0, 2, 3, 1).copy()} for x in calib.items()]
        calibration = q.calibrate({"serving_default": samples})
    q.quantize(calibration).export_model(str(path), overwrite=True)
    try:
        Interpreter(model_path=str(path)).allocate_tensors()
    except (RuntimeError, ValueError) as e:  # full-integer transformers are fragile in LiteRT: an optional rung
        from ..export.bundle import GateError

        raise GateError(f"not kept: the INT8 graph does not load in the LiteRT interpreter ({str(e).splitlines()[0][:120]})") from e
    report.update(tool=f"ai-edge-quantizer {version('ai-edge-quantizer')}", settings={"recipe": RECIPES[precision]},
                  calibration=calib.record() if precision == "int8" else None,
                  float_region_math="not applied: the TFLite graph keeps no module scopes to select ops by")
    return [path]
