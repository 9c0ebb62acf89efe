"""Video-level scores: a video's frames through the frame encoder, then either the mean of the per-frame
probabilities (the frame mean) or SDR's temporal head over windows of T frames, and the gate at video level.

A video-level `Scores` has one row per video: ids = video ids, logits/probabilities the video's, region_tokens the
number of its usable frames (0: no score), token_masks [V, 1, F] which of its F sampled frames were usable and
contributions zeros (a video's score is not a sum over tokens), so eval.validate.compare, reports and gates work on
it unchanged; its header says `level: video` and the aggregation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..device.stream import Stream
from ..device.verdict import Verdict
from ..models.temporal import TemporalInfo
from .gate import GateError
from .scores import Runner, Scores, score_set
from .validate import Budget, compare

# frames [1, T, D + 1] float32 (features, validity column) -> {logit, probability, valid_frames}: the torch temporal
# head (runtimes.reference.temporal_runner) and every bundle's temporal graph fit this.
TemporalRunner = Runner


def frame_scores(run: Runner, data, progress=None, engine=score_set, recipe=None) -> tuple[Scores, np.ndarray]:
    """Every frame of a video set through the frame encoder: (per-frame Scores, features [N, D] float32). `engine`
    and `recipe`: who scores (eval.scores.score_set, or a dfedge.distributed.RayEngine opening `recipe`)."""
    scores = engine(run, data, progress=progress, features=True, recipe=recipe)
    return scores, scores.features


def videos(scores: Scores) -> list[tuple[str, int, np.ndarray]]:
    """(video id, label, indices of its frames in set order), videos in order of first appearance."""
    order = list(dict.fromkeys(scores.video_ids.tolist()))
    rows = []
    for vid in order:
        idx = np.flatnonzero(scores.video_ids == vid)
        labels = set(scores.labels[idx].tolist())
        if len(labels) != 1:
            raise ValueError(f"video {vid}: its frames carry different labels {sorted(labels)}")
        rows.append((vid, labels.pop(), idx))
    return rows


def _video_scores(rows, labels, logits, usable, masks, header: dict) -> Scores:
    width = max((len(m) for m in masks), default=1)
    mask = np.zeros((len(rows), 1, width), bool)
    for i, m in enumerate(masks):
        mask[i, 0, : len(m)] = m
    ids = np.array([r[0] for r in rows], dtype=str)
    logits = np.asarray(logits, np.float32)
    return Scores(ids=ids, video_ids=ids, labels=np.asarray(labels, np.int8), logits=logits,
                  probabilities=(1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32),
                  region_tokens=np.asarray(usable, np.int32), token_masks=mask,
                  contributions=np.zeros(mask.shape, np.float16), header={"level": "video", **header})


def frame_mean_scores(frames: Scores) -> Scores:
    """Per video: the mean probability over its frames with a region, as log-odds (the kit's video verdict,
    device/verdict.video_record)."""
    rows = videos(frames)
    logits, usable, masks = [], [], []
    for _, _, idx in rows:
        ok = frames.scored[idx]
        p = float(np.clip(frames.probabilities[idx][ok].mean(), 1e-7, 1 - 1e-7)) if ok.any() else 0.5
        logits.append(np.log(p) - np.log1p(-p))
        usable.append(int(ok.sum()))
        masks.append(ok)
    return _video_scores(rows, [r[1] for r in rows], logits, usable, masks,
                         dict(frames.header, aggregation="frame-mean"))


def temporal_scores(frames: Scores, features: np.ndarray, temporal: TemporalRunner, window: int, min_valid: int = 1) -> Scores:
    """Per video: the temporal head's logit averaged over its windows of `window` frames with at least `min_valid`
    usable frames, the windows cut as a device cuts them (device/stream.Stream, stride = window); a video with no
    such window has no score (region_tokens 0)."""
    rows = videos(frames)
    logits, usable, masks = [], [], []
    for _, _, idx in rows:
        ok = frames.scored[idx]
        stream = Stream(temporal, window, features.shape[1], 0.0, min_valid)
        scored = []
        for i, k in enumerate(idx):
            verdict = Verdict("ok", feature=features[k]) if ok[i] else Verdict("no_region")
            scored += stream.push(i, verdict)
        scored = [w["logit"] for w in scored + stream.flush() if w["status"] == "ok"]
        logits.append(float(np.mean(scored)) if scored else 0.0)
        usable.append(int(ok.sum()) if scored else 0)
        masks.append(ok)
    return _video_scores(rows, [r[1] for r in rows], logits, usable, masks,
                         dict(frames.header, aggregation="temporal", window=window, min_valid=min_valid))


@dataclass(frozen=True)
class VideoGate:
    """The AUC gate at video level: a rung's frame encoder and temporal graph against the torch FP32 reference's
    temporal scores on a video set."""

    data: object  # the LabelledSet of frames, grouped by video
    reference: Scores  # video level, temporal aggregation
    budget: Budget
    window: int
    min_valid: int = 1
    engine: object = score_set  # who scores the frames (eval.scores.score_set or a dfedge.distributed.RayEngine)

    @classmethod
    def build(cls, run: Runner, temporal: TemporalRunner, data, budget: Budget, window: int,
              info: TemporalInfo = TemporalInfo({}), engine=score_set, recipe=None) -> VideoGate:
        """The reference: `run` (or `engine` with its `recipe`: eval.scores) and the temporal head on `data`, with
        the head's own threshold and min_valid (`info`)."""
        frames, features = frame_scores(run, data, engine=engine, recipe=recipe)
        ref = temporal_scores(frames, features, temporal, window, info.min_valid)
        ref.header.update(threshold=float(info.threshold), model="torch fp32", data=data.description)
        return cls(data, ref, budget, window, info.min_valid, engine)

    def __call__(self, run: Runner, temporal: TemporalRunner, recipe=None) -> dict:
        frames, features = frame_scores(run, self.data, engine=self.engine, recipe=recipe)
        art = temporal_scores(frames, features, temporal, self.window, self.min_valid)
        art.header.update(threshold=self.reference.threshold)
        comp = compare(self.reference, art, self.budget)
        record = {"level": "video", "data": self.data.description, "videos": len(art), "window": self.window,
                  "reference_auc": comp.reference.auc, "auc": comp.artifact.auc, "delta_auc": comp.delta_auc,
                  "delta_auc_ci": list(comp.delta_auc_ci), "delong_p": comp.delong.p_value,
                  "frame_agreement": comp.masks.token_agreement, "flip_rate": comp.agreement.flip_rate,
                  "max_abs_logit": comp.agreement.max_abs, "budget": {"max_auc_drop": self.budget.max_auc_drop},
                  "passed": not comp.reasons, "reasons": list(comp.reasons)}
        if comp.reasons:
            raise GateError("video level: " + "; ".join(comp.reasons))
        return record
