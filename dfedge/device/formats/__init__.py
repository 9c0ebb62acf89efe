"""The bundle formats: one row per runtime format, each format's code in its own module of this package
(`onnx`, `openvino`, `coreml`, `tflite`, `executorch`: session, placement, accelerators). A row's capabilities are
its fields; nothing outside a format's own module asks which format it is.

The other half of a target's row (exporter, quantizer, precisions) is the kit's (dfedge/targets.py); these rows
live here because they ship inside every bundle."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import BundleError, RuntimeUnavailable
from ..schema import arr, obj
from . import coreml, executorch, onnx, openvino, tflite

from ..graphs import INPUT_NAME
OS_NAMES = {"Darwin": "macOS"}  # platform.system() -> what users call it
Session = Callable[[Path, tuple, int, str, dict], Callable]  # (graph file, output names, threads, device, options) -> run(x) -> {name: array}


@dataclass(frozen=True)
class Format:
    """What a device needs to open a bundle of this format, and what the format can do here."""

    name: str
    model_file: str  # the detector's file (or package folder); its suffix is every graph file's of this format
    input_layout: str  # of the detector graph's input; runners take NCHW and transpose when needed
    runtime: str  # what predicts, in words (manifest "runtime")
    package: str  # the runtime's pip distribution (its version goes into bench results)
    session: Session
    options: dict  # the runtime options the kit validates with: the manifest's runtime_options, applied by the sessions
    allowed_options: dict  # what a manifest's runtime_options may set (device/schema.py's subset), checked by verify:
    # an option can have effects beyond the run (OpenVINO's CACHE_DIR writes compiled blobs wherever it points)
    placement: Callable[[Path, dict, str], dict] | None = None  # (model file, options, device) -> where each op runs here
    placement_note: str = ""  # why the placement is not observed on this machine (formats without `placement`)
    predicts_on: tuple[str, ...] = ()  # the operating systems (platform.system()) it predicts on; () = any
    interpreter: str | None = None  # the kit's interpreter that runs its graphs where it does not predict ("mil")
    accelerators: Callable[[], list[str]] | None = None  # the devices its runtime reports beyond the CPU
    input_name: str = INPUT_NAME

    def __post_init__(self) -> None:
        if self.placement is None and not self.placement_note:
            raise ValueError(f"format {self.name}: without a placement reader, placement_note must say why")

    def graph_file(self, stem: str) -> str:
        """The file name of another graph of this format (the face nets, the temporal head), e.g. face_pnet.onnx."""
        return stem + self.model_file[self.model_file.index("."):]

    @property
    def predicts_where(self) -> str:
        """The systems it predicts on, in words (macOS, not Darwin)."""
        return " or ".join(OS_NAMES.get(s, s) for s in self.predicts_on) or "any system"

    def runs_here(self) -> bool:
        return not self.predicts_on or platform.system() in self.predicts_on

    def open(self, path: Path, names: tuple[str, ...], threads: int = 0, device: str = "CPU", options: dict | None = None):
        """run(x) -> {output name: array} for one graph file of this format, on this machine's runtime."""
        if not self.runs_here():
            raise RuntimeUnavailable(
                f"{Path(path).parent}: {self.name} predicts only on {self.predicts_where} (this is "
                f"{OS_NAMES.get(platform.system(), platform.system())}); copy the bundle to such a device" +
                (", or check it here with `dfedge validate` (the kit's interpreter)" if self.interpreter else ""))
        return self.session(Path(path), names, threads, device, self.options if options is None else options)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("onnx", "detector.onnx", "NCHW", "onnxruntime", "onnxruntime", onnx.session,
               {"providers": ["CPUExecutionProvider"], "graph_optimization_level": "ORT_ENABLE_ALL"},
               obj({"providers": arr({"type": "string", "pattern": "^[A-Za-z]+ExecutionProvider$"}, least=1),
                    "graph_optimization_level": {"enum": ["ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED",
                                                          "ORT_ENABLE_LAYOUT", "ORT_ENABLE_ALL"]}}),
               onnx.placement, accelerators=onnx.accelerators),
        # f32 on CPU: FP16-compressed weights decompressed, no bfloat16 (OpenVINO's default on AVX-512 BF16/AMX CPUs)
        Format("openvino", "detector.xml", "NCHW", "openvino", "openvino", openvino.session,
               {"CPU": {"INFERENCE_PRECISION_HINT": "f32"}}, obj({device: openvino.HINTS for device in openvino.DEVICES}),
               openvino.placement, accelerators=openvino.accelerators),
        Format("coreml", "detector.mlpackage", "NCHW", "coremltools (macOS predict; MIL interpreter elsewhere)",
               "coremltools", coreml.session, {"compute_units": "ALL"},
               obj({"compute_units": {"enum": ["ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE"]}}),
               placement_note=coreml.PLACEMENT_NOTE, predicts_on=("Darwin",), interpreter="mil"),
        # AUTO: the interpreter's built-in kernels with the XNNPACK delegate applied by default
        Format("tflite", "detector.tflite", "NHWC", "ai_edge_litert", "ai-edge-litert", tflite.session,
               {"op_resolver": "AUTO"},
               obj({"op_resolver": {"enum": ["AUTO", "BUILTIN", "BUILTIN_REF", "BUILTIN_WITHOUT_DEFAULT_DELEGATES"]}}),
               tflite.placement),
        Format("executorch", "detector.pte", "NCHW", "executorch (XNNPACK delegate; its Python runtime runs on torch)",
               "executorch", executorch.session, {}, obj({}), placement_note=executorch.PLACEMENT_NOTE),
    )
}


def format_of(bundle, target) -> Format:
    """The row of a manifest's target, or one line naming the bundle and the targets known."""
    if not isinstance(target, str) or target not in FORMATS:
        raise BundleError(f"{bundle}: unknown target {target!r} in the manifest (known: {', '.join(FORMATS)})")
    return FORMATS[target]
