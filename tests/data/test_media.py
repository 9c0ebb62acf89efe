"""Photos as uploaded: large JPEGs decoded at a reduced size, EXIF orientation, the photo's own size; video frames
turned upright."""

import numpy as np
from PIL import Image

from dfedge.data.media import read_photo, upright


def test_a_large_jpeg_is_decoded_at_a_reduced_size_and_keeps_its_own(tmp_path):
    Image.new("RGB", (8000, 6000), (90, 120, 150)).save(tmp_path / "big.jpg", quality=80)
    photo = read_photo(tmp_path / "big.jpg")
    assert photo.size == (8000, 6000) and photo.image.shape == (3000, 4000, 3)  # DCT scaling 1/2: never at 48 MP


def test_exif_orientation_turns_the_photo_and_its_size(tmp_path):
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:10, :10] = 255  # a white corner, top-left as stored
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6  # display rotated 90° clockwise
    Image.fromarray(stored).save(tmp_path / "turned.jpg", exif=exif, quality=100)
    photo = read_photo(tmp_path / "turned.jpg")
    assert photo.size == (40, 60) and photo.image.shape == (60, 40, 3)
    assert photo.image[:10, -10:].mean() > 200  # the stored top-left corner is now top-right


def test_video_frames_turn_as_their_display_matrix_says():
    frame = np.arange(6).reshape(2, 3, 1)
    assert upright(frame, 0) is frame
    np.testing.assert_array_equal(upright(frame, 90)[..., 0], np.rot90(frame[..., 0]))
    np.testing.assert_array_equal(upright(frame, -90)[..., 0], np.rot90(frame[..., 0], 3))
