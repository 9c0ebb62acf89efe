"""The row type of the target table (dfedge/targets.py), without torch: the command line's --target and --precision
choices and help, and the docs table, read the rows; a row names its converters (`models.lazy.Lazy`), which are
imported, torch with them, when a bundle is first converted.

A converter (an exporter in `export/<target>.py`, a quantizer in `quantize/<target>.py`) is one function
`convert(job, out_dir, report) -> list[Path]` (export/job.py: what a job holds); a graph exporter writes the small
fp32 graphs of a bundle (the face front end's nets, the temporal head).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..device.formats import Format

Converter = Callable[[object, Path, dict], list[Path]]  # (export.job.Job, out_dir, report) -> files
# (torch module, example input tensor, output path, output names, dynamic height/width) -> files: small fp32 graphs
GraphExporter = Callable[[object, object, Path, tuple, bool], list[Path]]
# What the table's notes state about a converter before it is imported: the ONNX exporter's opset (export/onnx.py).
ONNX_OPSET = 20


@dataclass(frozen=True)
class Target:
    """One row of the target table: the bundle-format half (`format`, from dfedge/device/formats: model file,
    input name and layout, runtime package, opener) and the conversion half (exporter, quantizer, precisions). The
    converters are functions or `Lazy` names of them: either is called as `convert(job, out_dir, report)`."""

    format: Format
    exporter: Converter  # writes the exported precisions
    graph_exporter: GraphExporter  # writes the face front end's nets in this format
    precisions: tuple[str, ...]  # exported: fp32, fp16
    converter: str  # the package whose version the manifest records
    note: str  # one line for the docs table
    quantizer: Converter | None = None  # writes the quantized rungs
    quantized: tuple[str, ...] = ()  # rungs below fp16

    @property
    def name(self) -> str:
        return self.format.name

    @property
    def all_precisions(self) -> tuple[str, ...]:
        return self.precisions + self.quantized

    def convert_for(self, precision: str) -> Converter:
        """The exporter or the quantizer that writes `precision`."""
        if precision in self.precisions:
            return self.exporter
        if precision in self.quantized and self.quantizer is not None:
            return self.quantizer
        raise ValueError(f"target '{self.name}' has no precision '{precision}' (has: {', '.join(self.all_precisions)})")
