import json

import cv2
import numpy as np
import pytest
import torch

from dfedge.data.faces import MTCNN, Face, FrameRef, LandmarkFile, align, largest_face, similarity_transform
from dfedge.models.checkpoint import CheckpointError
from dfedge.models.detector import ALIGN_TEMPLATE, align_template
from dfedge.models.mtcnn import ONet, PNet, RNet


def similarity(scale, degrees, shift):
    a = np.deg2rad(degrees)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.concatenate([rot, np.asarray(shift, float)[:, None]], axis=1)


def apply(m, points):
    return points @ m[:, :2].T + m[:, 2]


def blobs(shape, points, sigma=1.5):
    """A frame with one Gaussian spot per point, each in its own gray level band, to find them again."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    img = np.zeros(shape[:2], np.float32)
    for x, y in points:
        img += 250 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def test_align_puts_known_landmarks_on_the_template_within_a_pixel():
    m = similarity(0.42, 12.0, (61.3, 47.9))  # the 448 crop frame -> a 256 video frame
    landmarks = apply(m, ALIGN_TEMPLATE)
    frame = blobs((256, 256), landmarks)
    crop = align(frame, landmarks)
    assert crop.shape == (448, 448, 3) and crop.dtype == np.uint8
    gray = crop[..., 0].astype(np.float64)
    for tx, ty in ALIGN_TEMPLATE:  # intensity centroid of each spot, in a window around where it must be
        x0, y0 = int(tx) - 15, int(ty) - 15
        win = gray[y0 : y0 + 31, x0 : x0 + 31]
        yy, xx = np.mgrid[0:31, 0:31]
        cx, cy = (win * xx).sum() / win.sum() + x0, (win * yy).sum() / win.sum() + y0
        assert abs(cx - tx) < 1.0 and abs(cy - ty) < 1.0, (cx, cy, tx, ty)


def test_alignment_is_the_least_squares_similarity():
    rng = np.random.default_rng(0)
    landmarks = apply(similarity(0.5, -7.0, (80, 60)), ALIGN_TEMPLATE) + rng.normal(0, 2.0, (5, 2))
    m = similarity_transform(landmarks, ALIGN_TEMPLATE)
    # closed form: [u, v] = [[a, -b], [b, a]] [x, y] + [tx, ty], linear in (a, b, tx, ty)
    x, y = landmarks[:, 0], landmarks[:, 1]
    one, zero = np.ones(5), np.zeros(5)
    design = np.concatenate([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
    target = np.concatenate([ALIGN_TEMPLATE[:, 0], ALIGN_TEMPLATE[:, 1]])
    a, b, tx, ty = np.linalg.lstsq(design, target, rcond=None)[0]
    np.testing.assert_allclose(m, [[a, -b, tx], [b, a, ty]], atol=1e-4)


def test_align_other_sizes_use_the_scaled_template():
    landmarks = apply(similarity(0.4, 0.0, (50, 50)), ALIGN_TEMPLATE)
    m = similarity_transform(landmarks, align_template(224))
    np.testing.assert_allclose(apply(m, landmarks), align_template(224), atol=1e-3)
    assert align(blobs((256, 256), landmarks), landmarks, size=224).shape == (224, 224, 3)


def test_largest_face_is_the_biggest_box():
    pts = np.zeros((5, 2), np.float32)
    small = Face(np.array([0, 0, 10, 10], np.float32), 0.99, pts)
    big = Face(np.array([0, 0, 30, 20], np.float32), 0.80, pts)
    assert largest_face([small, big, small]) is big
    assert largest_face([]) is None


def test_landmark_file_json_and_csv_give_the_same_faces(tmp_path):
    pts = ALIGN_TEMPLATE * 0.5
    with_box = {"landmarks": pts.tolist(), "box": [1, 2, 300, 301], "score": 0.9}
    (tmp_path / "lm.json").write_text(json.dumps({
        "Celeb-real/a.mp4": {"3": pts.tolist(), "4": [with_box, (pts + 100).tolist()]},  # one face; a list of two
    }))
    header = "video,frame," + ",".join(f"x{i},y{i}" for i in range(1, 6)) + ",box_x1,box_y1,box_x2,box_y2,score"
    rows = [f"Celeb-real/a.mp4,3,{','.join(map(str, pts.ravel()))},,,,,",
            f"Celeb-real/a.mp4,4,{','.join(map(str, pts.ravel()))},1,2,300,301,0.9",
            f"Celeb-real/a.mp4,4,{','.join(map(str, (pts + 100).ravel()))},,,,,"]
    (tmp_path / "lm.csv").write_text("\n".join([header, *rows]) + "\n")
    for name in ("lm.json", "lm.csv"):
        lf = LandmarkFile(tmp_path / name)
        assert lf.name.startswith("landmarks-")
        one, two = lf.locate(None, FrameRef("Celeb-real/a.mp4", 3)), lf.locate(None, FrameRef("Celeb-real/a.mp4", 4))
        assert len(one) == 1 and len(two) == 2
        np.testing.assert_allclose(one[0].landmarks, pts, atol=1e-4)
        np.testing.assert_allclose(two[0].box, [1, 2, 300, 301])
        assert two[0].score == pytest.approx(0.9)
        assert two[1].score == 1.0 and two[1].area > 0
        assert lf.locate(None, FrameRef("Celeb-real/a.mp4", 5)) == []  # no entry: no face


def test_landmark_file_errors_name_the_file(tmp_path):
    (tmp_path / "bad.json").write_text('{"v.mp4": {"0": [[1, 2]]}}')
    with pytest.raises(ValueError, match="bad.json: not a landmark file"):
        LandmarkFile(tmp_path / "bad.json")
    (tmp_path / "bad.csv").write_text("video,frame,x1\n")
    with pytest.raises(ValueError, match="bad.csv: CSV landmark file lacks column"):
        LandmarkFile(tmp_path / "bad.csv")
    (tmp_path / "ok.json").write_text("{}")
    with pytest.raises(ValueError, match="needs the video and frame index"):
        LandmarkFile(tmp_path / "ok.json").locate(np.zeros((4, 4, 3), np.uint8))


def save_nets(folder, broken=None):
    folder.mkdir(exist_ok=True)
    for name, net in (("pnet", PNet()), ("rnet", RNet()), ("onet", ONet())):
        state = net.state_dict()
        if name == broken:
            state["conv9.weight"] = state.pop("conv1.weight")
        torch.save(state, folder / f"{name}.pt")


def test_mtcnn_weights_missing_or_corrupt_is_one_line_naming_the_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"pnet\.pt: no such file \(MTCNN weights: a folder with"):
        MTCNN(weights=tmp_path / "none")
    save_nets(tmp_path / "renamed", broken="rnet")
    with pytest.raises(CheckpointError, match=r"rnet\.pt: missing key 'conv1.weight'"):
        MTCNN(weights=tmp_path / "renamed")
    save_nets(tmp_path / "corrupt")
    onet = tmp_path / "corrupt" / "onet.pt"
    onet.write_bytes(onet.read_bytes()[:2000])  # truncated
    with pytest.raises(CheckpointError, match=r"onet\.pt: unreadable") as err:
        MTCNN(weights=tmp_path / "corrupt")
    assert "\n" not in str(err.value)


def test_mtcnn_finds_grace_hopper_with_plausible_landmarks():
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        image = cv2.cvtColor(cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    faces = MTCNN().locate(image)
    assert len(faces) == 1
    face = faces[0]
    (x1, y1, x2, y2), (le, re, nose, ml, mr) = face.box, face.landmarks
    assert face.score > 0.95 and 120 < x2 - x1 < 260  # the face is about 180 px wide
    assert le[0] < nose[0] < re[0] and ml[0] < mr[0]  # image-left first
    assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1])  # eyes above nose above mouth
    assert ((face.landmarks >= [x1, y1]) & (face.landmarks <= [x2, y2])).all()


def test_mtcnn_finds_nothing_in_a_flat_frame():
    assert MTCNN().locate(np.full((120, 160, 3), 128, np.uint8)) == []
