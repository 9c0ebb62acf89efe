"""ExecuTorch: `.pte` programs (XNNPACK delegate) on ExecuTorch's Python runtime; where ops run is fixed when the program is lowered (the manifest has it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np



def session(path: Path, names: tuple[str, ...], threads: int, device: str, options: dict):
    # ExecuTorch's Python runtime is built on torch: it takes and returns torch tensors (its C++ runtime on a device
    # needs no torch). torch is imported here, by the runtime's API, and by nothing else in a bundle.
    import torch
    from executorch.runtime import Runtime

    if threads:
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(threads)  # the XNNPACK delegate's threads (the runtime's own API)
    method = Runtime.get().load_program(str(path)).load_method("forward")

    def run(x):
        outputs = method.execute([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))])
        return {name: out.numpy() for name, out in zip(names, outputs)}

    return run

PLACEMENT_NOTE = ("fixed when the program is lowered: the manifest's placement is the partitioner's record (delegated "
                  "vs portable ops), read at conversion")
