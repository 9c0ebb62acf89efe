"""TFLite via litert-torch, run with the `ai_edge_litert` interpreter. NHWC float32 input (what mobile camera
pipelines hand over); fp16 = float16 weights written by ai-edge-quantizer (dequantized at load, f32 compute)."""

from __future__ import annotations

from pathlib import Path

import torch



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
    """The bundle's runner (dfedge.runtimes.standalone: the same code the bundle ships as bench.py)."""
    from ..runtimes.standalone import open_runner

    return open_runner(bundle, "tflite", threads)
