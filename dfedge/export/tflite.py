"""TFLite via litert-torch, run with the `ai_edge_litert` interpreter. NHWC float32 input (what mobile camera
pipelines hand over); fp16 = float16 weights written by ai-edge-quantizer (dequantized at load, f32 compute)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..models.detector import OUTPUT_NAMES


class NHWCInput(torch.nn.Module):
    """[B, H, W, 3] -> the detector's [B, 3, H, W]; outputs as a plain tuple in OUTPUT_NAMES order."""

    def __init__(self, detector: torch.nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor):
        return tuple(self.detector(image.permute(0, 3, 1, 2)))


def export(detector: torch.nn.Module, example: torch.Tensor, out_dir: Path, precision: str, metadata: dict[str, str],
           cache: dict | None = None) -> list[Path]:
    cache = {} if cache is None else cache
    path = out_dir / "detector.tflite"
    if "tflite" not in cache:
        import litert_torch

        edge = litert_torch.convert(NHWCInput(detector).eval(), (example.permute(0, 2, 3, 1).contiguous(),))
        edge.export(str(path))
        cache["tflite"] = path.read_bytes()
    path.write_bytes(cache["tflite"])
    if precision == "fp16":
        from ai_edge_quantizer import quantizer, recipe_manager
        from ai_edge_quantizer.algorithm_manager import AlgorithmName
        from ai_edge_quantizer.qtyping import TFLOperationName

        recipe = recipe_manager.RecipeManager()
        recipe.add_weight_only_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                      algorithm_key=AlgorithmName.FLOAT_CASTING)
        quantizer.Quantizer(str(path), recipe.get_quantization_recipe()).quantize().export_model(str(path), overwrite=True)
    return [path]


def load(bundle: Path, threads: int = 0):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(bundle / "detector.tflite"), num_threads=threads or None)
    signature = interpreter.get_signature_list()["serving_default"]
    (input_name,) = signature["inputs"]
    # litert-torch names outputs output_0, output_1, ... in the order the module returns them
    order = sorted(signature["outputs"], key=lambda n: int(n.rsplit("_", 1)[-1]))
    runner = interpreter.get_signature_runner()

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        nhwc = np.ascontiguousarray(images.transpose(0, 2, 3, 1), dtype=np.float32)
        out = runner(**{input_name: nhwc})
        return {name: out[key] for name, key in zip(OUTPUT_NAMES, order)}

    return run
