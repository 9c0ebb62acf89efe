import numpy as np
import pytest

from dfedge.data.blend import region_mask, self_blend
from dfedge.data.sources import ToySet
from dfedge.data.synthetic import LAPA, render_face, toy_sample


def test_faces_are_a_pure_function_of_seed_and_index():
    a, b, c = render_face(5, 3), render_face(5, 3), render_face(5, 4)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.landmarks, b.landmarks)
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == (448, 448, 3) and a.image.dtype == np.uint8
    assert a.labels.shape == (448, 448) and a.landmarks.shape == (5, 2)


def neighbourhood(labels, point, r=3):
    x, y = int(round(point[0])), int(round(point[1]))
    return set(np.unique(labels[y - r : y + r + 1, x - r : x + r + 1]).tolist())


@pytest.mark.parametrize("index", range(12))
def test_labels_and_landmarks_agree(index):
    face = render_face(11, index)
    lab, lm = face.labels, face.landmarks
    assert lab.max() <= LAPA["hair"]
    assert lab[int(lm[0][1]), int(lm[0][0])] == LAPA["re"]  # image-left eye is the subject's right eye
    assert lab[int(lm[1][1]), int(lm[1][0])] == LAPA["le"]
    assert LAPA["nose"] in neighbourhood(lab, lm[2])
    for corner in lm[3:]:
        assert neighbourhood(lab, corner) & {LAPA["ulip"], LAPA["llip"], LAPA["imouth"]}
    assert lm[0][0] < lm[1][0] and lm[3][0] < lm[4][0] and lm[0][1] < lm[2][1] < lm[3][1]
    assert (lab == LAPA["ulip"]).any() and (lab == LAPA["llip"]).any()
    assert (lab == LAPA["imouth"]).any() == face.mouth_open


def test_landmarks_stay_near_the_alignment_template():
    from dfedge.models.detector import ALIGN_TEMPLATE

    offsets = np.stack([render_face(2, i).landmarks - ALIGN_TEMPLATE for i in range(40)])
    assert np.abs(offsets).max() < 40  # pose jitter, not a different frame
    assert np.abs(offsets.mean(axis=0)).max() < 10


def test_fakes_change_only_the_blended_region():
    fakes = [s for s in (toy_sample(i, "train") for i in range(16)) if s.fake]
    assert len(fakes) >= 4
    for s in fakes:
        diff = np.abs(s.image.astype(int) - s.face.image.astype(int)).max(axis=2)
        assert np.all(diff[s.blend_mask == 0] == 0)
        mouth = region_mask(s.face.labels, "mouth") > 0
        assert diff[mouth].mean() > 2.0  # a visible manipulation inside the mouth


def test_reals_are_untouched_faces():
    reals = [s for s in (toy_sample(i, "train") for i in range(16)) if not s.fake]
    assert reals and all(np.array_equal(s.image, s.face.image) for s in reals)


def test_toy_set_labels_match_its_samples():
    data = ToySet("val", 12)
    assert list(data.labels()) == [data[i].label for i in range(12)]
    assert 0 < data.labels().sum() < 12


@pytest.mark.parametrize("region", ["eyes", "nose", "face"])
def test_blend_takes_the_region_as_a_parameter(region):
    s = toy_sample(1, "train", region=region, fake_fraction=1.0)
    assert s.fake
    outside = s.blend_mask == 0
    assert np.all(s.image[outside] == s.face.image[outside])
    assert region_mask(s.face.labels, region).sum() > 0


def test_self_blend_refuses_an_empty_region():
    face = render_face(0, 0)
    with pytest.raises(ValueError, match="region mask is empty"):
        self_blend(face.image, np.zeros((448, 448), np.float32), np.random.default_rng(0))


def test_mixed_toy_fakes_draw_their_region_and_share_the_reals():
    from dfedge.data.sources import ToySet
    from dfedge.data.synthetic import MIXED_REGIONS

    drawn = [toy_sample(i, "val", "mixed") for i in range(40)]
    regions = {s.region for s in drawn if s.fake}
    assert regions == set(MIXED_REGIONS) and all(s.region is None for s in drawn if not s.fake)
    again = toy_sample(7, "val", "mixed")
    assert again.region == drawn[7].region and np.array_equal(again.image, drawn[7].image)
    for i, s in enumerate(drawn):  # the same index is the same face, real or fake, in every region's set
        other = toy_sample(i, "val", "eyes")
        assert other.fake == s.fake and (s.fake or np.array_equal(other.image, s.image))
        if s.fake and s.region == "eyes":
            assert np.array_equal(other.image, s.image)
    assert ToySet("val", 5, "mixed").description == "toy:val:5:mixed"
    with pytest.raises(ValueError, match="toy fakes manipulated in 'all'"):
        ToySet("val", 5, "all")
