"""The face front end's numpy pieces (dfedge/device/, the code every bundle ships): resampling, coordinates,
verdicts, video aggregation and face following."""

import numpy as np
import pytest

from dfedge.device import verdict as verdicts
from dfedge.device.faces import Face, face_from_landmarks
from dfedge.device.image import resize_area
from dfedge.device.scorer import Scorer
from dfedge.device.verdict import Verdict, judge, video_record


def test_resize_area_is_the_box_average():
    image = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    np.testing.assert_allclose(resize_area(image, 2, 3), image.reshape(2, 3, 3, 3, 3).mean((1, 3)), atol=1e-4)
    third = resize_area(np.arange(10, dtype=np.float32).reshape(1, 10, 1), 1, 4)[0, :, 0]  # 2.5 pixels each
    np.testing.assert_allclose(third, [(0 + 1 + 0.5 * 2) / 2.5, (0.5 * 2 + 3 + 4) / 2.5,
                                       (5 + 6 + 0.5 * 7) / 2.5, (0.5 * 7 + 8 + 9) / 2.5], atol=1e-5)


def test_points_scale_in_pixel_index_coordinates():
    """Pixel i of a copy half as large covers pixels 2i and 2i + 1: its centre i is at 2i + 0.5 in the original."""
    face = Face(np.array([0, 0, 10, 10], np.float32), 0.9, np.zeros((5, 2), np.float32))
    big = face.scaled(2, 2)
    np.testing.assert_allclose(big.landmarks, 0.5) and np.testing.assert_allclose(big.box, [0, 0, 20, 20])
    with pytest.raises(ValueError, match="5 finite"):
        face_from_landmarks([[np.nan, 0]] * 5)


def outputs(mask_cells, logit=1.0, g=14):
    mask = np.zeros((g, g), np.float32)
    for r, c in mask_cells:
        mask[r, c] = 1
    return {"logit": np.array([logit]), "probability": np.array([1 / (1 + np.exp(-logit))]), "token_mask": mask[None],
            "region_tokens": np.array([mask.sum()]), "contributions": mask[None] * 0.1}


GUARD = {"tokens": [0, 6], "row": [8.2, 10.5], "col": [5.5, 8.1]}


def test_only_an_ok_verdict_carries_a_score():
    none = judge(outputs([]), 0.0, GUARD, "mouth")
    chin = judge(outputs([(12, 7)]), 0.0, GUARD, "mouth")  # one "mouth" token on the chin
    ok = judge(outputs([(9, 6), (9, 7), (10, 7)], logit=0.3), 0.5, GUARD, "mouth")
    assert (none.status, chin.status, ok.status) == ("no_region", "implausible_region", "ok")
    assert "row 12.00 is outside [8.20, 10.50]" in chin.reason
    for v in (none, chin):
        assert v.probability is None and v.logit is None and v.decision is None
    assert ok.decision == "real" and ok.probability == pytest.approx(1 / (1 + np.exp(-0.3)))  # 0.3 < threshold 0.5
    assert judge(outputs([(12, 7)]), 0.0, None).status == "ok"  # no guard: only an empty region is refused


@pytest.mark.parametrize("logit", [np.nan, np.inf, -np.inf])
def test_a_non_finite_output_is_a_model_error_never_a_decision(logit):
    """NaN compares False with any threshold, which used to read as "real": now it is an error with no score."""
    with np.errstate(over="ignore"):
        verdict = judge(outputs([(9, 6), (9, 7)], logit=logit), 0.0, GUARD, "mouth")
    assert verdict.status == "model_error" and "non-finite" in verdict.reason
    assert verdict.probability is None and verdict.logit is None and verdict.decision is None
    assert verdict.record()["probability"] is None and "top_tokens" not in verdict.record()


def test_a_video_record_averages_usable_frames_and_says_why_there_are_none():
    ok = [Verdict("ok", probability=p, decision="x") for p in (0.2, 0.6, 1.0)]  # a saturated frame: p = 1
    record = video_record([(0, ok[0]), (3, Verdict("no_face", "none")), (6, ok[1]), (9, ok[2])], threshold=0.0)
    assert record["status"] == "ok" and record["usable_frames"] == 3 and record["frames"] == 4
    assert record["probability"] == pytest.approx(0.6) and np.isfinite(record["logit"]) and record["decision"] == "fake"
    empty = video_record([(0, Verdict("no_region", "x")), (1, Verdict("no_region", "x")), (2, Verdict("no_face", "y"))], 0.0)
    assert empty["status"] == "no_region" and empty["probability"] is None and "(1 no_face, 2 no_region)" in empty["reason"]


def test_following_a_face_picks_it_up_again_after_a_jump(monkeypatch):
    """Sampled frames are far apart: when nothing overlaps the face followed, the nearest face is taken, not none."""
    a, b = Face(np.array([0, 0, 50, 50], np.float32), 1.0, np.zeros((5, 2))), Face(np.array([300, 0, 340, 40], np.float32), 1.0, np.zeros((5, 2)))
    moved = Face(np.array([120, 10, 170, 60], np.float32), 1.0, np.zeros((5, 2)))
    frames = {0: [a, b], 1: [b, moved]}  # frame 1: the face followed jumped right, another face stays put
    scorer = Scorer(run=None, threshold=0.0, template=np.zeros((5, 2)), crop_size=448)
    monkeypatch.setattr(Scorer, "faces", lambda self, image, landmarks=None: frames[int(image)])
    monkeypatch.setattr(Scorer, "score_face", lambda self, image, face: Verdict("ok", probability=0.5, face=face))
    record = scorer.score_video([(0, 0), (1, 1)])
    assert record["usable_frames"] == 2
    assert [f["face"]["box"] for f in record["per_frame"]] == [[0.0, 0.0, 50.0, 50.0], [120.0, 10.0, 170.0, 60.0]]
    assert verdicts.STATUSES == ("ok", "no_face", "no_region", "implausible_region", "unreadable", "model_error")
