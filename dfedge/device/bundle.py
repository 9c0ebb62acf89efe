"""Opening a verified bundle on this machine: its detector graph, its face detector, its temporal head, the
Scorer and Stream around them, with the manifest's settings and the runtime options it was validated with.

Every opener takes an optional `opener(graph file, output names) -> run(x)`: by default the format's own runtime;
the kit passes its interpreter where the runtime does not predict (Core ML off macOS)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import BundleError, RuntimeUnavailable
from .faces import FaceDetector, detectors
from .files import MANIFEST
from .formats import Format, format_of
from .graphs import OUTPUTS, TEMPORAL_OUTPUTS
from .host import cpu_isa, cpu_model
from .scorer import Scorer
from .stream import Stream

Opener = Callable[[Path, tuple], Callable]  # (graph file, output names) -> run(x) -> {name: array}


def runtime_options(manifest: dict) -> dict:
    """The runtime options the bundle was validated with (bundles before they were recorded: the format's)."""
    return manifest.get("runtime_options", format_of(MANIFEST, manifest.get("target")).options)


def detector_runner(run, fmt: Format):
    """run on the graph's own layout -> run on NCHW crops float32 [1, 3, S, S]."""
    if fmt.input_layout == "NHWC":
        return lambda x: run(np.ascontiguousarray(np.asarray(x).transpose(0, 2, 3, 1)))
    return run


def _opener(fmt: Format, threads: int, device: str, options: dict) -> Opener:
    return lambda path, names: fmt.open(path, names, threads, device, options)


def open_runner(bundle: str | Path, target: str, threads: int = 0, device: str = "CPU", options: dict | None = None,
                opener: Opener | None = None):
    """-> run(images float32 [1, 3, S, S] RGB 0-255) -> {output name: array}, whatever the graph's own layout.
    options: the manifest's runtime_options (default: the format's, which the kit validates with)."""
    fmt = format_of(bundle, target)
    options = fmt.options if options is None else options
    try:
        return detector_runner((opener or _opener(fmt, threads, device, options))(Path(bundle) / fmt.model_file, OUTPUTS), fmt)
    except (KeyError, AttributeError, TypeError, RuntimeError) as e:
        # options the runtime cannot take (a name it does not know, a property it refuses): one line, not a traceback;
        # a model that does not load with the format's own options is the converter's error and propagates
        if isinstance(e, RuntimeUnavailable) or (isinstance(e, RuntimeError) and options == fmt.options):
            raise
        raise BundleError(f"{Path(bundle) / MANIFEST}: runtime_options {json.dumps(options)} not accepted by "
                          f"{fmt.package}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


def placement(bundle: str | Path, target: str, options: dict | None = None, device: str = "CPU") -> dict | None:
    """Where each op of the bundle's detector runs on this machine and in which precision, as its runtime reports it
    with the bundle's options; None for formats whose placement is fixed at conversion or not observable here."""
    fmt = format_of(bundle, target)
    if fmt.placement is None:
        return None
    options = fmt.options if options is None else options
    return dict(fmt.placement(Path(bundle) / fmt.model_file, options, device), options=options, cpu=cpu_model(), isa=cpu_isa())


def placement_unobserved(fmt: Format) -> dict:
    """The placement record of a format whose placement nothing here can observe."""
    return {"runtime": fmt.name, "observed": False, "reason": fmt.placement_note}


def open_faces(bundle: str | Path, manifest: dict, threads: int = 0, device: str = "CPU",
               opener: Opener | None = None) -> FaceDetector | None:
    """The bundle's face detector on its runtime (its nets' graphs, its settings), or None for a bundle without one."""
    front = manifest.get("front_end") or {}
    if not front.get("files"):
        return None
    fmt = format_of(bundle, manifest.get("target"))
    row = detectors()[front.get("detector", "mtcnn")]
    opener = opener or _opener(fmt, threads, device, runtime_options(manifest))
    sessions = {net.name: opener(Path(bundle) / front["files"][net.name], net.outputs) for net in row.nets}
    return row.make(sessions, {**row.settings, **front.get("settings", {})})


def open_temporal(bundle: str | Path, manifest: dict, threads: int = 0, device: str = "CPU", opener: Opener | None = None):
    """The bundle's temporal head (SDR, a video bundle's second graph) as run(frames [1, T, D + 1]) -> {logit,
    probability, valid_frames}, or None for a bundle without one."""
    temporal = manifest.get("temporal")
    if not temporal:
        return None
    fmt = format_of(bundle, manifest.get("target"))
    opener = opener or _opener(fmt, threads, device, runtime_options(manifest))
    return opener(Path(bundle) / temporal["file"], TEMPORAL_OUTPUTS)


def stream(temporal, manifest: dict, stride: int | None = None) -> Stream:
    """A Stream over the bundle's temporal graph `temporal` (open_temporal), with the manifest's window, feature
    width, threshold and minimum of usable frames; `stride` frames between scores (default: the window)."""
    t = manifest["temporal"]
    return Stream(temporal, int(t["frames"]), int(t["feature_dim"]), float(t["threshold_logit"]),
                  int(t.get("min_valid", 1)), stride)


def scorer(run, manifest: dict, detector: FaceDetector | None = None) -> Scorer:
    """The bundle's Scorer: photo (any size) or crop -> verdicts, with the manifest's threshold, guard, alignment
    template and face detector."""
    probe = manifest.get("probe", {})
    return Scorer(run, float(probe.get("threshold_logit", 0.0)), np.asarray(manifest["alignment"]["template"], np.float64),
                  int(manifest["alignment"]["crop_size"]), probe.get("guard"),
                  manifest.get("labels", {}).get("region", "region"), detector)
