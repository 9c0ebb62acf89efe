"""Run a bundle with its target's runtime, after checking the manifest's file hashes."""

from __future__ import annotations

from pathlib import Path

from ..export.bundle import verify
from ..export.targets import TARGETS


def open_bundle(bundle: str | Path, threads: int = 0):
    """-> (runner, manifest). The runner takes crops [B, 3, 448, 448] float32 0-255 (NCHW, whatever the graph's
    own layout) and returns the detector's outputs by name."""
    bundle = Path(bundle)
    manifest = verify(bundle)
    target = TARGETS.get(manifest.get("target"))
    if target is None:
        raise ValueError(f"{bundle}: unknown target {manifest.get('target')!r} in the manifest")
    return target.exporter().load(bundle, threads), manifest
