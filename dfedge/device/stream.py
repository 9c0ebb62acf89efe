"""SDR's temporal head over a video's frames as they arrive: a ring buffer, windows scored by the stream rules."""

from __future__ import annotations

import collections
import time

import numpy as np

from .verdict import Verdict


class Stream:
    """SDR's temporal head over frames as they arrive (a camera, or a video decoded one frame at a time): a ring
    buffer of the last T frames' features and validity; a window is scored once the buffer holds T frames and
    `stride` frames arrived since the last score (stride T: one score per T frames; 1: a sliding window), and
    `flush` scores what is left at the end (padded with invalid frames). `temporal(x [1, T, D + 1])` -> {logit,
    probability, valid_frames}: the bundle's temporal graph, or the kit's torch head."""

    def __init__(self, temporal, frames: int, feature_dim: int, threshold: float, min_valid: int = 1,
                 stride: int | None = None, clock=None) -> None:
        if not 1 <= (stride or frames) <= frames:
            raise ValueError(f"stride {stride} must be between 1 and the window's {frames} frames")
        self.temporal, self.frames, self.dim, self.threshold = temporal, frames, feature_dim, threshold
        self.min_valid, self.stride = min_valid, stride or frames
        self.buffer: collections.deque = collections.deque(maxlen=frames)  # (index, feature or None)
        self.since = 0  # frames pushed since the last scored window
        self.clock = clock or time.perf_counter
        self.window_ms: list[float] = []

    def push(self, index: int, verdict: Verdict) -> list[dict]:
        """Add one frame's verdict (usable when ok and it carries a feature); -> [the window scored now] or []."""
        usable = verdict.status == "ok" and verdict.feature is not None
        self.buffer.append((index, verdict.feature if usable else None))
        self.since += 1
        if len(self.buffer) == self.frames and self.since >= self.stride:
            return [self._score()]
        return []

    def flush(self) -> list[dict]:
        """Score the frames not yet in any scored window (a clip shorter than T, or its tail)."""
        return [self._score()] if self.since else []

    def _score(self) -> dict:
        x = np.zeros((1, self.frames, self.dim + 1), np.float32)
        items = list(self.buffer)  # the last T frames (fewer in a clip shorter than T: the rest stays invalid)
        for i, (_, feature) in enumerate(items):
            if feature is not None:
                x[0, i, :-1], x[0, i, -1] = feature, 1.0
        self.since = 0
        record = {"first_frame": items[0][0], "last_frame": items[-1][0], "valid_frames": int(x[0, :, -1].sum()),
                  "threshold": self.threshold}
        if record["valid_frames"] < self.min_valid:
            return dict(record, status="no_region", reason=f"{record['valid_frames']} usable frames of {len(items)} "
                        f"(at least {self.min_valid} needed)", logit=None, probability=None, decision=None)
        start = self.clock()
        out = self.temporal(x)
        self.window_ms.append((self.clock() - start) * 1e3)
        logit = float(np.asarray(out["logit"]).reshape(-1)[0])
        if not np.isfinite(logit):
            return dict(record, status="model_error", reason=f"the temporal head returned a non-finite score ({logit})",
                        logit=None, probability=None, decision=None)
        return dict(record, status="ok", reason="", logit=logit, probability=float(1.0 / (1.0 + np.exp(-logit))),
                    decision="fake" if logit >= self.threshold else "real")
