"""Celeb-DF v2 on a tiny fixture in the published layout: toy faces moving in short mp4 videos, landmarks known
from how each frame was drawn."""

import json

import av
import cv2
import numpy as np
import pytest

from dfedge.data import media
from dfedge.data.celebdf import CelebDF, list_videos, read_test_list
from dfedge.data.media import decode_frames, frame_indices
from dfedge.data.faces import LandmarkFile, align
from dfedge.data.sources import open_set
from dfedge.data.synthetic import render_face

SIZE = 256
# (path, official label 1 = real / 0 = fake or None when not in the test list, frames; 0 = header only, -1 = garbage)
VIDEOS = [
    ("Celeb-real/id0_0000.mp4", 1, 40),
    ("Celeb-synthesis/id0_id1_0000.mp4", 0, 40),
    ("YouTube-real/00001.mp4", 1, 10),
    ("Celeb-synthesis/id1_id0_0001.mp4", 0, -1),
    ("Celeb-real/id2_0000.mp4", 1, 0),
    ("Celeb-real/id9_0009.mp4", 1, None),  # listed, never written
    ("Celeb-synthesis/id3_id0_0002.mp4", None, 12),  # not in the test list: the train split
]
FACELESS = ("Celeb-synthesis/id0_id1_0000.mp4", 0)  # no landmarks for this frame


def frame_transform(t: int, n: int) -> np.ndarray:
    """The toy face's 448 crop -> frame t of a 256 video: it drifts, grows and turns a little."""
    scale, angle = 0.40 + 0.08 * t / n, np.deg2rad(-5 + 10 * t / n)
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.concatenate([rot, np.array([[30 + 1.5 * t], [20 + t]])], axis=1)


def toy_video(seed: int, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    face = render_face(seed, 0)
    frames, marks = [], []
    for t in range(n):
        m = frame_transform(t, n)
        frames.append(cv2.warpAffine(face.image, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderValue=(40, 90, 60)))
        marks.append(face.landmarks @ m[:, :2].T + m[:, 2])
    return frames, marks


def write_mp4(path, frames) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt, s.options = SIZE, SIZE, "yuv444p", {"crf": "0", "preset": "ultrafast"}
        c.start_encoding()  # a video without frames still gets its header
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("celebdf")
    drawn, landmarks, lines = {}, {}, []
    for seed, (rel, official, n) in enumerate(VIDEOS):
        if official is not None:
            lines.append(f"{official} {rel}")
        if n is None:
            continue
        if n < 0:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(b"this is not an mp4 " * 50)
            continue
        frames, marks = toy_video(seed, n)
        write_mp4(root / rel, frames)
        drawn[rel] = (frames, marks)
        landmarks[rel] = {str(t): p.tolist() for t, p in enumerate(marks) if (rel, t) != FACELESS}
    (root / "List_of_testing_videos.txt").write_text("\n".join(lines) + "\n")
    (root / "landmarks.json").write_text(json.dumps(landmarks))
    return root, drawn


@pytest.fixture(scope="module")
def prepared(world, tmp_path_factory):
    root, _ = world
    cache = tmp_path_factory.mktemp("cache")
    return CelebDF(root, LandmarkFile(root / "landmarks.json"), cache_dir=cache).prepare(), cache


def test_frame_indices_are_32_uniformly_spaced():
    idx = frame_indices(40)
    assert len(idx) == 32 and idx[0] == 0 and idx[-1] == 39 and set(np.diff(idx)) <= {1, 2}
    np.testing.assert_array_equal(frame_indices(300), np.linspace(0, 299, 32).astype(int))  # DeepfakeBench
    np.testing.assert_array_equal(frame_indices(10), np.arange(10))  # fewer frames: all of them
    assert len(frame_indices(32)) == 32 and len(frame_indices(0)) == 0


def test_decoded_frames_are_the_sampled_ones(world):
    root, drawn = world
    originals = np.stack(drawn["Celeb-real/id0_0000.mp4"][0]).astype(np.float32)
    n, frames, error = decode_frames(root / "Celeb-real/id0_0000.mp4")
    assert n == 40 and error is None and list(frames) == frame_indices(40).tolist()
    for i, frame in frames.items():  # each kept frame is closest to the original frame of the same index
        assert np.abs(originals - frame.astype(np.float32)).mean(axis=(1, 2, 3)).argmin() == i


def test_a_container_without_a_frame_count_still_gives_uniform_frames(world, tmp_path):
    _, drawn = world
    frames, _ = drawn["Celeb-real/id0_0000.mp4"]
    path = tmp_path / "v.mkv"  # Matroska stores no frame count: the count comes from decoding
    write_mp4(path, frames)
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 0
    n, kept, _ = decode_frames(path)
    assert n == 40 and list(kept) == frame_indices(40).tolist()


def test_labels_follow_the_official_list_inverted_to_one_is_fake(world):
    root, _ = world
    assert read_test_list(root)[:3] == [("Celeb-real/id0_0000.mp4", 0), ("Celeb-synthesis/id0_id1_0000.mp4", 1),
                                        ("YouTube-real/00001.mp4", 0)]
    assert list_videos(root, "train") == [("Celeb-synthesis/id3_id0_0002.mp4", 1)]
    assert len(list_videos(root, "all")) == 6


def test_a_list_in_the_wrong_convention_is_refused(tmp_path):
    (tmp_path / "List_of_testing_videos.txt").write_text("1 Celeb-synthesis/id0_id1_0000.mp4\n")
    with pytest.raises(ValueError, match=r"List_of_testing_videos.txt:1: label 1 means real"):
        read_test_list(tmp_path)


def test_samples_carry_labels_and_video_ids(prepared):
    data, _ = prepared
    per_video = {}
    for i in range(len(data)):
        s = data[i]
        per_video.setdefault(s.video_id, []).append(s)
        assert s.id.startswith(s.video_id + "#") and s.image.shape == (448, 448, 3)
    assert {v: len(s) for v, s in per_video.items()} == {
        "Celeb-real/id0_0000.mp4": 32, "Celeb-synthesis/id0_id1_0000.mp4": 31, "YouTube-real/00001.mp4": 10}
    assert {v: {x.label for x in s} for v, s in per_video.items()} == {
        "Celeb-real/id0_0000.mp4": {0}, "Celeb-synthesis/id0_id1_0000.mp4": {1}, "YouTube-real/00001.mp4": {0}}
    np.testing.assert_array_equal(data.labels(), [data[i].label for i in range(len(data))])


def test_crops_are_the_frames_aligned_on_their_landmarks(prepared, world):
    data, _ = prepared
    _, drawn = world
    frames, marks = drawn["Celeb-real/id0_0000.mp4"]
    for i in (0, 13, 31):
        s = data[i]
        t = int(s.id.rsplit("#", 1)[1])
        expected = align(frames[t], marks[t]).astype(np.float32)
        assert np.abs(s.image.astype(np.float32) - expected).mean() < 1.0  # lossless video; 1 px off gives ~3


def test_bad_media_are_reported_with_a_reason_and_the_rest_loads(prepared):
    data, _ = prepared
    found = {(p.video, p.frame, p.kind) for p in data.problems}
    assert found == {
        ("Celeb-synthesis/id1_id0_0001.mp4", None, "unreadable"),
        ("Celeb-real/id2_0000.mp4", None, "no frames"),
        ("Celeb-real/id9_0009.mp4", None, "missing"),
        ("Celeb-synthesis/id0_id1_0000.mp4", 0, "no face"),
        ("YouTube-real/00001.mp4", None, "short"),
    }
    assert all(p.detail for p in data.problems)
    assert data.problem_counts() == {"unreadable": 1, "no frames": 1, "missing": 1, "no face": 1, "short": 1}
    assert len(data) == 73


def test_a_second_run_reads_the_cache(prepared, world, monkeypatch):
    first, cache = prepared
    root, _ = world

    class Refuse:
        name = first.locator.name

        def locate(self, frame, at=None):
            raise AssertionError("the locator ran again")

    def no_decoding(*args, **kwargs):
        raise AssertionError("a video was decoded again")

    monkeypatch.setattr(media, "Pass", no_decoding)
    again = CelebDF(root, Refuse(), cache_dir=cache)
    assert len(again) == len(first) and again.problems == first.problems
    for i in (0, 40, 72):
        assert again[i].id == first[i].id and np.array_equal(again[i].image, first[i].image)
    assert again.fingerprint() == first.fingerprint()


def test_open_set_opens_a_celebdf_spec(world, tmp_path, monkeypatch):
    root, _ = world
    monkeypatch.setenv("DFEDGE_CACHE", str(tmp_path))
    data = open_set(f"celebdf:{root}:train:landmarks={root / 'landmarks.json'}")
    assert isinstance(data, CelebDF) and data.split == "train" and data.description.startswith("celebdf:")
    assert len(data) == 12 and set(data.labels()) == {1}
    assert (tmp_path / "faces" / data.locator.name).is_dir()


@pytest.mark.heavy
def test_the_layout_gives_video_level_scores_of_the_temporal_head_and_the_frame_mean(world, tmp_path, monkeypatch):
    """dfedge reference --temporal on Celeb-DF's layout: one row per video that gave crops, for both aggregations;
    the frame mean is the mean of that video's per-frame probabilities (frames with a region)."""
    import contextlib

    from dfedge.models.factory import DetectorSpec
    from dfedge.scoring import reference_scores, video_reference

    root, _ = world
    monkeypatch.setenv("DFEDGE_CACHE", str(tmp_path))
    spec = f"celebdf:{root}:test:landmarks={root / 'landmarks.json'}"
    progress = lambda n, dev: contextlib.nullcontext(lambda k=1: None)  # noqa: E731
    temporal, mean = video_reference(DetectorSpec(), spec, "cpu", None, progress)
    frames = reference_scores(DetectorSpec(), spec, "cpu", 8, progress)
    videos = list(dict.fromkeys(frames.video_ids.tolist()))
    assert temporal.ids.tolist() == mean.ids.tolist() == videos  # the three videos that decode, in list order
    assert len(videos) == 3 and temporal.labels.tolist() == [0, 1, 0]
    assert temporal.header["aggregation"] == "temporal" and mean.header["aggregation"] == "frame-mean"
    assert np.isfinite(temporal.logits).all() and temporal.header["window"] == 16
    for i, vid in enumerate(videos):
        rows = (frames.video_ids == vid) & frames.scored
        if rows.any():
            p = frames.probabilities[rows].mean()
            assert mean.logits[i] == pytest.approx(np.log(p / (1 - p)), abs=1e-4)
            assert mean.region_tokens[i] == rows.sum() and temporal.region_tokens[i] == rows.sum()
