"""How another process opens a runner: what an engine that fans work out (dfedge.distributed.RayEngine) sends to each
of its workers instead of the runner itself, which holds sessions and weights that do not travel."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Recipe:
    """kind torch: the FP32 torch detector of `spec` (a models.factory.DetectorSpec) on `device`; bundle: the bundle
    folder `path`, verified whole before anything of it runs; graph: the converted graph in folder `path` for
    `target` with runtime `options` (a rung under the build's gate, before it is a bundle). Files are read by path:
    on a cluster every node must see them at the same path (a shared file system)."""

    kind: str
    spec: object = None
    path: str | None = None
    target: str | None = None
    options: dict = field(default_factory=dict)
    device: str = "cpu"
    threads: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("torch", "bundle", "graph"):
            raise ValueError(f"unknown runner recipe '{self.kind}' (torch, bundle, graph)")

    def open(self):
        """-> run(images float32 [B, 3, S, S] 0-255) -> {output name: array}."""
        if self.kind == "torch":
            from ..models.factory import build_detector
            from .reference import torch_runner

            return torch_runner(build_detector(self.spec), self.device)
        if self.kind == "bundle":
            from . import load

            return load(self.path, self.threads, interpreter=True).run
        from . import open_runtime

        return open_runtime(self.path, self.target, self.threads, interpreter=True, options=dict(self.options))[0]

    @property
    def key(self) -> str:
        """What identifies the model this opens (partial results are kept per key)."""
        return repr((self.kind, self.spec, self.path, self.target, sorted(self.options.items()), self.device))
