import numpy as np
import pytest

from dfedge.data.blend import region_mask
from dfedge.data.sources import open_set
from dfedge.data.synthetic import LAPA, FrameState, render_face
from dfedge.data.toyvideo import ToyVideoSet, clip_is_fake, toy_clip, write_clip

FAKE = next(i for i in range(20) if clip_is_fake(i, "val"))
REAL = next(i for i in range(20) if not clip_is_fake(i, "val"))


def same_face(a, b) -> bool:
    return (np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
            and np.array_equal(a.landmarks, b.landmarks) and (a.mouth_open, a.occluded) == (b.mouth_open, b.occluded))


@pytest.mark.parametrize("index", range(4))
def test_no_state_and_a_neutral_state_draw_the_face_as_before(index):
    face = render_face(3, index)
    assert same_face(face, render_face(3, index, state=None))
    assert same_face(face, render_face(3, index, state=FrameState()))


@pytest.mark.parametrize("index", range(4))
def test_a_state_opens_the_mouth_of_the_same_face(index):
    closed, opened = render_face(3, index, state=FrameState(opening=0)), render_face(3, index, state=FrameState(opening=14))
    assert not closed.mouth_open and not (closed.labels == LAPA["imouth"]).any()
    assert opened.mouth_open and (opened.labels == LAPA["imouth"]).sum() > 500
    # the identity (colours, lighting, texture, grain) is the same: only pixels near the mouth change
    ys, xs = np.nonzero(region_mask(closed.labels) + region_mask(opened.labels))
    near = np.zeros((448, 448), bool)
    near[ys.min() - 12 : ys.max() + 13, xs.min() - 12 : xs.max() + 13] = True
    assert np.array_equal(closed.image[~near], opened.image[~near])
    assert np.array_equal(closed.labels[~near], opened.labels[~near])


def test_a_moved_face_keeps_exact_labels_and_landmarks():
    still = render_face(3, 1, state=FrameState(opening=8))
    moved = render_face(3, 1, state=FrameState(opening=8, angle=3.0, shift=(4.0, -3.0), scale=1.03))
    a, c = np.deg2rad(3.0), np.array([224.0, 448 * 0.56])
    rot = 1.03 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    assert np.allclose(moved.landmarks, (still.landmarks - c) @ rot.T + c + [4.0, -3.0], atol=1e-3)
    lm = moved.landmarks
    assert moved.labels[int(lm[0][1]), int(lm[0][0])] == LAPA["re"] and moved.labels[int(lm[1][1]), int(lm[1][0])] == LAPA["le"]
    assert abs(int((moved.labels == LAPA["face"]).sum()) / int((still.labels == LAPA["face"]).sum()) - 1.03**2) < 0.02


def test_clips_are_pure_and_a_shorter_clip_is_a_prefix():
    a, b, short = toy_clip(FAKE, "val", 4), toy_clip(FAKE, "val", 4), toy_clip(FAKE, "val", 3)
    assert a.fake and a.frames.shape == (4, 448, 448, 3) and a.frames.dtype == np.uint8
    assert a.labels.shape == (4, 448, 448) and a.landmarks.shape == (4, 5, 2) and a.strengths.shape == (4,)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.strengths, b.strengths)
    assert np.array_equal(a.frames[:3], short.frames) and a.states[:3] == short.states
    assert not np.array_equal(toy_clip(FAKE, "test", 1).frames[0], a.frames[0])


def test_fakes_blend_the_mouth_with_jumping_strength_and_reals_are_untouched():
    fake, real = toy_clip(FAKE, "val", 8), toy_clip(FAKE, "val", 8, fake_fraction=0.0)
    assert not real.fake and not real.strengths.any()
    assert fake.strengths.std() > 0.15 and np.abs(np.diff(fake.strengths)).mean() > 0.2
    for t in range(8):
        diff = np.abs(fake.frames[t].astype(int) - real.frames[t]).max(axis=2)
        if fake.strengths[t] == 0:
            assert not diff.any()
        else:  # only around the mouth
            ys, xs = np.nonzero(region_mask(real.labels[t]))
            near = np.zeros_like(diff, bool)
            near[ys.min() - 60 : ys.max() + 61, xs.min() - 60 : xs.max() + 61] = True
            assert diff[near].any() and not diff[~near].any()

    def mouth_colour_steps(clip):
        colours = [f[region_mask(lab) > 0].mean(axis=0) for f, lab in zip(clip.frames, clip.labels)]
        return np.abs(np.diff(colours, axis=0)).mean()

    assert mouth_colour_steps(fake) > 2 * mouth_colour_steps(real)  # the frames of a fake disagree


def test_real_clips_talk_and_move_smoothly():
    clip = toy_clip(REAL, "val", 12)
    assert not clip.fake
    opening = np.array([s.opening for s in clip.states])
    assert np.ptp(opening) > 3 and np.abs(np.diff(opening)).max() < 8
    inner = (clip.labels == LAPA["imouth"]).sum(axis=(1, 2))
    assert np.ptp(inner) > 300  # the drawn mouth opens and closes with the states
    assert np.abs(np.diff(clip.landmarks, axis=0)).max() < 3  # head motion is slow
    assert np.abs(clip.landmarks - clip.landmarks.mean(axis=0)).max() < 12  # and stays near alignment


def test_the_set_is_per_frame_samples_in_clip_order(monkeypatch):
    from dfedge.data import toyvideo

    data = open_set("toyvideo:val:3:2")
    assert isinstance(data, ToyVideoSet) and data.description == "toyvideo:val:3:2"
    assert len(data) == 6 and data.frames_per_clip == 2
    renders = []
    monkeypatch.setattr(toyvideo, "toy_clip", lambda *a: renders.append(a) or toy_clip(*a))
    samples = [data[i] for i in range(6)]
    assert len(renders) == 3  # one render per clip, frames read in order
    assert [s.id for s in samples[:3]] == ["toyvideo-val-000000#00", "toyvideo-val-000000#01", "toyvideo-val-000001#00"]
    assert [s.video_id for s in samples] == [f"toyvideo-val-{c:06d}" for c in (0, 0, 1, 1, 2, 2)]
    assert list(data.labels()) == [s.label for s in samples]
    assert data.clips() == [(f"toyvideo-val-{c:06d}", int(clip_is_fake(c, "val")), [2 * c, 2 * c + 1]) for c in range(3)]
    assert np.array_equal(samples[3].image, toy_clip(1, "val", 2).frames[1])
    labels = ToyVideoSet("val", 12, 2).labels()
    assert labels.shape == (24,) and 0 < labels.sum() < 24
    assert ToyVideoSet("train", 2).description == "toyvideo:train:2:16"


@pytest.mark.parametrize("spec, description", [("toyvideo", "toyvideo:train:25:16"), ("toyvideo:test", "toyvideo:test:25:16"),
                                               ("toyvideo:val:7", "toyvideo:val:7:16"), ("toyvideo:val:7:4", "toyvideo:val:7:4")])
def test_open_set_names_toy_videos(spec, description):
    assert open_set(spec).description == description


@pytest.mark.parametrize("spec, message", [("toyvideo:nope", "unknown toy split 'nope'"), ("toyvideo:val:x", "must be integers"),
                                           ("toyvideo:val:2:1.5", "must be integers"), ("toyvideo:val:0", "must be positive"),
                                           ("toyvideo:val:2:0", "must be positive"), ("toyvideo:val:2:4:5", "expected toyvideo")])
def test_bad_toy_video_specs_are_one_clear_error(spec, message):
    with pytest.raises(ValueError, match=message) as info:
        open_set(spec)
    assert "\n" not in str(info.value)


def test_a_written_clip_decodes_and_its_face_is_found(tmp_path):
    from dfedge.data.media import decode_frames
    from dfedge.device.faces.mtcnn import detect_faces
    from dfedge.models.mtcnn import TorchNets, load_mtcnn

    clip = toy_clip(FAKE, "val", 5)
    path = write_clip(tmp_path / "clip.mp4", clip.frames, seed=3)
    assert path == tmp_path / "clip.mp4" and [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
    decoded, frames, error = decode_frames(path, count=5)
    assert decoded == 5 and sorted(frames) == list(range(5)) and error is None
    assert frames[0].shape == (480, 640, 3)
    nets = TorchNets(load_mtcnn())
    boxes = []
    for t in (0, 4):
        (face,) = detect_faces(frames[t], nets.pnet, nets.rnet, nets.onet)
        boxes.append(face.box)
        assert 100 < face.box[2] - face.box[0] < 240  # the face of the 240 px crop
    assert 0 < np.abs(boxes[1] - boxes[0]).max() < 40  # it drifts, slowly
