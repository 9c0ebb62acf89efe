"""Core ML: `.mlpackage` ML programs. Core ML predicts only on macOS (the format row's `predicts_on`; elsewhere the
kit runs the package's MIL program with its own interpreter, `interpreter`); which unit runs each op is decided when
a Mac or iPhone loads the model (`placement_note`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PLACEMENT_NOTE = ("Core ML assigns each op to the Neural Engine, GPU or CPU when a Mac or iPhone loads the model "
                  "(MLComputePlan, macOS 14.4+); nothing here can observe it")


def session(path: Path, names: tuple[str, ...], threads: int, device: str, options: dict):  # pragma: no cover - CI is Linux
    import coremltools as ct

    model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit[options.get("compute_units", "ALL")])
    source = model.get_spec().description.input[0].name
    return lambda x: {k: np.asarray(v) for k, v in model.predict({source: np.asarray(x, np.float32)}).items()}
