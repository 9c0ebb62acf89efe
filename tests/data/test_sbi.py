"""Self-blended fakes from a folder of real crops: pairs, labels, and a change confined to the mouth."""

import numpy as np
import pytest
from PIL import Image

from dfedge.data.sbi import template_mouth_mask
from dfedge.data.sources import open_set


@pytest.fixture()
def real_folder(tmp_path):
    from dfedge.data.sources import ToySet

    toy = ToySet("test", 12)
    reals = [toy[i].image for i in range(12) if toy[i].label == 0][:3]
    for k, image in enumerate(reals):
        Image.fromarray(image).save(tmp_path / f"face{k}.png")
    return tmp_path, reals


def test_each_real_face_comes_with_its_blended_fake(real_folder):
    folder, reals = real_folder
    data = open_set(f"sbi:{folder}")
    assert len(data) == 2 * len(reals) and list(data.labels()) == [0, 1] * len(reals)
    mask = template_mouth_mask(448) > 0
    grown = np.zeros_like(mask)
    ys, xs = np.nonzero(mask)
    grown[ys.min() - 40 : ys.max() + 40, xs.min() - 40 : xs.max() + 40] = True  # blur/elastic reach
    for k, real in enumerate(reals):
        r, f = data[2 * k], data[2 * k + 1]
        assert (r.label, f.label) == (0, 1) and r.video_id != f.video_id
        np.testing.assert_array_equal(r.image, real)
        diff = np.abs(f.image.astype(int) - real.astype(int)).sum(axis=2)
        assert diff[mask].mean() > 5  # the mouth really changed
        assert diff[~grown].max() == 0  # nothing outside it did
    np.testing.assert_array_equal(data[1].image, open_set(f"sbi:{folder}")[1].image)  # deterministic


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no images"):
        open_set(f"sbi:{tmp_path}")
    with pytest.raises(ValueError, match="no such folder"):
        open_set(f"sbi:{tmp_path / 'nope'}")
