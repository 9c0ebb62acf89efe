"""Video-level scores: the frame mean, the temporal head's windows as a device cuts them (device/stream.Stream), and the
gate at video level, on hand-made frames whose answers are known."""

import numpy as np
import pytest

from dfedge.eval.gate import GateError
from dfedge.eval.scores import Scores
from dfedge.eval.validate import Budget
from dfedge.eval.video import frame_mean_scores, temporal_scores, videos
from dfedge.device.stream import Stream
from dfedge.device.verdict import Verdict, video_record


def _frames(per_video=(5, 3, 4), labels=(1, 0, 1), probs=None, regions=None):
    n = sum(per_video)
    vids = np.concatenate([[f"v{i}"] * k for i, k in enumerate(per_video)])
    ids = np.array([f"{v}#{j}" for v, j in zip(vids, np.concatenate([np.arange(k) for k in per_video]))])
    lab = np.concatenate([[l] * k for l, k in zip(labels, per_video)]).astype(np.int8)
    p = np.linspace(0.1, 0.9, n).astype(np.float32) if probs is None else np.asarray(probs, np.float32)
    r = np.ones(n, np.int32) if regions is None else np.asarray(regions, np.int32)
    return Scores(ids=ids, video_ids=vids, labels=lab, logits=np.log(p / (1 - p)), probabilities=p, region_tokens=r,
                  token_masks=np.ones((n, 2, 2), bool), contributions=np.zeros((n, 2, 2), np.float16), header={})


def _window_sum(x):
    """A temporal 'head' whose logit is the sum of the first feature over valid frames: checks what reaches it."""
    return {"logit": np.array([float((x[0, :, 0] * x[0, :, -1]).sum())]), "probability": np.array([0.5]),
            "valid_frames": np.array([x[0, :, -1].sum()])}


def test_frame_mean_is_the_mean_probability_of_usable_frames():
    frames = _frames(regions=[1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0])
    out = frame_mean_scores(frames)
    assert out.ids.tolist() == ["v0", "v1", "v2"] and out.labels.tolist() == [1, 0, 1]
    p0 = frames.probabilities[[0, 2, 3]].mean()
    assert out.logits[0] == pytest.approx(np.log(p0 / (1 - p0)), abs=1e-5)
    assert out.region_tokens.tolist() == [3, 3, 0]  # v2 has no usable frame: not scored
    assert out.token_masks.shape == (3, 1, 5) and out.token_masks[0, 0].tolist() == [True, False, True, True, False]
    assert out.header["level"] == "video" and out.header["aggregation"] == "frame-mean"


def test_temporal_windows_are_cut_like_the_device_stream():
    # one video of 7 frames, window 3: windows [0,1,2], [3,4,5], then the tail = the last 3 frames [4,5,6]
    frames = _frames(per_video=(7,), labels=(1,), regions=[1, 1, 0, 1, 1, 1, 1])
    feats = np.arange(7, dtype=np.float32)[:, None].repeat(4, 1)
    out = temporal_scores(frames, feats, _window_sum, window=3)
    expected = np.mean([0 + 1, 3 + 4 + 5, 4 + 5 + 6])
    assert out.logits[0] == pytest.approx(expected)
    # the device's Stream gives the same windows, frame by frame
    stream = Stream(_window_sum, 3, 4, threshold=0.0)
    got = []
    for i in range(7):
        v = Verdict("ok", feature=feats[i]) if frames.region_tokens[i] else Verdict("no_region")
        got += stream.push(i, v)
    got += stream.flush()
    assert [(w["first_frame"], w["last_frame"], w["logit"]) for w in got] == [(0, 2, 1.0), (3, 5, 12.0), (4, 6, 15.0)]


def test_stream_stride_and_min_valid():
    feats = np.ones((6, 2), np.float32)
    stream = Stream(_window_sum, 4, 2, threshold=0.0, min_valid=2, stride=1)
    out = []
    for i in range(6):
        out += stream.push(i, Verdict("ok", feature=feats[i]) if i != 4 else Verdict("no_face"))
    assert [w["first_frame"] for w in out] == [0, 1, 2]  # sliding: a score per frame once 4 are buffered
    assert stream.flush() == []  # nothing left unscored
    short = Stream(_window_sum, 4, 2, threshold=0.0, min_valid=2)
    short.push(0, Verdict("ok", feature=feats[0]))
    (w,) = short.flush()  # a clip shorter than the window: one padded window, too few usable frames
    assert w["status"] == "no_region" and w["logit"] is None and w["valid_frames"] == 1
    with pytest.raises(ValueError, match="stride 5 must be between 1"):
        Stream(_window_sum, 4, 2, 0.0, stride=5)


def test_video_record_takes_the_temporal_verdict_and_keeps_the_frame_mean():
    verdicts = [(i, Verdict("ok", probability=0.2, logit=float(np.log(0.25)), feature=np.ones(2, np.float32))) for i in range(4)]
    windows = [{"status": "ok", "logit": 2.0, "threshold": 0.5}, {"status": "no_region", "logit": None, "threshold": 0.5}]
    rec = video_record(verdicts, 0.0, windows)
    assert rec["aggregation"] == "temporal" and rec["status"] == "ok" and rec["logit"] == 2.0 and rec["decision"] == "fake"
    assert rec["frame_mean"]["probability"] == pytest.approx(0.2) and rec["frame_mean"]["decision"] == "real"
    none = video_record(verdicts, 0.0, windows[1:])
    assert none["status"] == "no_region" and none["probability"] is None


def test_frames_of_one_video_must_agree_on_the_label():
    frames = _frames()
    frames.labels[1] = 0
    with pytest.raises(ValueError, match="video v0: its frames carry different labels"):
        videos(frames)


def test_video_gate_refuses_a_runner_that_loses_auc(monkeypatch):
    import dfedge.eval.video as video

    class Data:
        description = "hand-made"

    # the frame encoder stood in by a table of features (the runner is the sign it multiplies them by): a perfect
    # temporal reference, then an artifact whose scores are reversed
    frames = _frames(per_video=(2,) * 8, labels=(1, 0) * 4)
    feats = np.where(frames.labels[:, None] == 1, 1.0, -1.0).astype(np.float32).repeat(3, 1)
    monkeypatch.setattr(video, "frame_scores", lambda run, data, progress=None, engine=None, recipe=None: (frames, feats * run))
    gate = video.VideoGate.build(1.0, _window_sum, Data(), Budget(0.005), window=2)
    assert gate.reference.logits.tolist() == [2.0, -2.0] * 4
    record = gate(1.0, _window_sum)
    assert record["delta_auc"] == 0.0 and record["passed"] and record["videos"] == 8
    with pytest.raises(GateError, match="video level: AUC drop 100.00 pp"):
        gate(-1.0, _window_sum)
