"""The image input path (device/image.read_image: what `dfedge score`, crops and every bundle read), as uploads
arrive: explicit conversions said in words, refusals in one line, and properties over arbitrary bytes, modes,
sizes, bit depths, EXIF orientations and truncation (hypothesis; HYPOTHESIS_PROFILE=long tries many more)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from dfedge.data.images import ImageError, read_crop
from dfedge.device.image import read_image


def save(image: Image.Image, path, **kw):
    image.save(path, **kw)
    return path


def test_16_bit_greyscale_is_scaled_not_clipped_to_white(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    path = save(Image.fromarray(ramp), tmp_path / "deep.png")
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # really a 16-bit file
    rgb, size, notes = read_image(path)
    assert size == (64, 64) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], np.rint(ramp / 257.0).astype(np.uint8))
    assert (rgb[..., 0] == rgb[..., 2]).all() and rgb.min() == 0 and rgb.max() == 255  # not all white (the bug)
    assert notes == ["16-bit greyscale scaled to 8-bit RGB"]


def test_transparency_is_composited_and_said(tmp_path):
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = (200, 10, 10)
    path = save(Image.fromarray(rgba, "RGBA"), tmp_path / "clear.png")  # fully transparent
    rgb, _, notes = read_image(path)
    assert (rgb == 255).all() and notes == ["transparency composited over white (100% of pixels not opaque)"]
    rgba[:16, :, 3] = 255  # top half opaque, bottom half half-transparent
    rgba[16:, :, 3] = 128
    rgb, _, notes = read_image(save(Image.fromarray(rgba, "RGBA"), tmp_path / "half.png"))
    assert (rgb[:16] == (200, 10, 10)).all() and (rgb[16:] == np.rint([(200 * 128 + 255 * 127) / 255,
                                                                       (10 * 128 + 255 * 127) / 255] * 2)[[0, 1, 1]]).all()
    assert notes == ["transparency composited over white (50% of pixels not opaque)"]
    opaque = np.full((8, 8, 4), 255, np.uint8)
    assert read_image(save(Image.fromarray(opaque, "RGBA"), tmp_path / "opaque.png"))[2] == []  # nothing to say


def test_animations_are_refused_not_read_as_their_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.raises(ValueError, match="2 frames .an animation or a multi-page file.: score it as a video"):
        read_image(path)


def test_float_samples_have_no_8_bit_scale(tmp_path):
    path = save(Image.fromarray(np.random.default_rng(0).random((8, 8)).astype(np.float32), "F"), tmp_path / "f.tiff")
    with pytest.raises(ValueError, match="32-bit float samples: no defined 8-bit scale"):
        read_image(path)


def test_an_aligned_crop_is_turned_upright_too(tmp_path):
    crop = np.zeros((448, 448, 3), np.uint8)
    crop[:50, :50] = 255  # top-left as stored
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 3  # display rotated 180°
    path = save(Image.fromarray(crop), tmp_path / "crop.png", exif=exif)
    notes: list[str] = []
    upright = read_crop(path, 448, notes)
    assert upright[-50:, -50:].min() == 255 and upright[:50, :50].max() == 0
    assert notes == ["turned upright (EXIF orientation 3)"]
    with pytest.raises(ImageError, match="crop.png: expected a 224x224 aligned face crop, got 448x448"):
        read_crop(path, 224)


# --- properties ------------------------------------------------------------------------------------------------

MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"II*\x00",
         b"BM", b"\x00\x00\x00\x18ftypheic"]


def refused_in_one_line(path) -> None:
    """read_image returns an 8-bit RGB image or raises ValueError with one line: nothing else, ever."""
    try:
        rgb, (w, h), notes = read_image(path)
    except ValueError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and min(rgb.shape[:2]) >= 1
    assert w >= 1 and h >= 1 and all(isinstance(n, str) for n in notes)


@given(head=st.sampled_from(MAGIC), body=st.binary(max_size=3000))
def test_arbitrary_bytes_never_crash(tmp_path_factory, head, body):
    path = tmp_path_factory.mktemp("bytes") / "upload.jpg"
    path.write_bytes(head + body)
    refused_in_one_line(path)


FORMATS = {"PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"], "TIFF": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "CMYK"],
           "WEBP": ["RGB", "RGBA"], "BMP": ["1", "L", "P", "RGB"], "GIF": ["L", "P"], "JPEG": ["L", "RGB", "CMYK"]}
LOSSLESS = ("PNG", "TIFF", "BMP")


@st.composite
def images(draw):
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(FORMATS[fmt]))
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    value = draw(st.integers(0, 255))
    orientation = draw(st.integers(1, 8))
    if mode in ("I;16", "I"):
        im = Image.fromarray(np.full((h, w), value * 257, np.uint16 if mode == "I;16" else np.int32))
    else:
        im = Image.new("RGB", (w, h), (value, value, value)).convert(mode)
    return fmt, mode, im, value, orientation


@given(case=images())
def test_modes_sizes_depths_and_orientations_read_exactly(tmp_path_factory, case):
    fmt, mode, im, value, orientation = case
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = orientation
    path = tmp_path_factory.mktemp("modes") / f"x.{fmt.lower()}"
    extra = {"exif": exif} if fmt in ("PNG", "TIFF", "WEBP", "JPEG") else {}
    im.save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}), **extra)
    with Image.open(path) as stored:  # what the file declares (TIFF keeps its own tag, BMP and GIF have none)
        declared = stored.getexif().get(0x0112)
    rgb, (w, h), notes = read_image(path)
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8  # the size reported is the image's, upright
    if fmt != "TIFF":  # (Pillow's TIFF reader applies a TIFF orientation tag itself, on top of the EXIF one)
        assert (w, h) == ((im.height, im.width) if declared in (5, 6, 7, 8) else im.size)
    assert any("EXIF orientation" in n for n in notes) == (declared not in (None, 1))
    if fmt in LOSSLESS and declared in (None, 1):  # the same pixels: 16-bit scaled exactly, others as Pillow converts
        expected = value if mode in ("I;16", "I") else np.asarray(im.convert("RGB"))
        assert np.abs(rgb.astype(int) - expected).max() <= (1 if mode == "CMYK" else 0), (fmt, mode, value)


@given(fmt=st.sampled_from(["PNG", "JPEG", "WEBP", "GIF", "TIFF"]), cut=st.floats(0.0, 1.0))
def test_truncated_files_are_refused_in_one_line(tmp_path_factory, fmt, cut):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buf, format=fmt)
    data = buf.getvalue()
    path = tmp_path_factory.mktemp("cut") / f"x.{fmt.lower()}"
    path.write_bytes(data[: int(len(data) * cut)])
    refused_in_one_line(path)


@pytest.fixture(scope="module")
def pipeline(onnx_bundle):
    from dfedge.scoring import open_detector

    return open_detector(onnx_bundle)


STATUSES = {"ok", "no_face", "no_region", "implausible_region", "unreadable", "model_error"}


@given(long=st.integers(1, 20000), short=st.integers(1, 64), square=st.booleans(), tall=st.booleans(),
       fmt=st.sampled_from(["PNG", "JPEG"]), seed=st.integers(0, 3))
def test_any_size_down_to_1_px_and_any_aspect_ratio_gives_a_record(pipeline, tmp_path_factory, long, short, square,
                                                                   tall, fmt, seed):
    """Photos from 1 px up, as slivers of up to 20000 x 1 or near-square, through the whole path dfedge score runs
    (decode, detect, align, score): one record or more for the file, each with a known status, never an exception."""
    from dfedge.scoring import score_paths

    w, h = (min(long, 512), max(1, min(long, 512) - short // 2)) if square else (long, short)
    w, h = (h, w) if tall else (w, h)
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("sizes") / f"upload.{fmt.lower()}"
    Image.fromarray(pixels).save(path, format=fmt)
    records = list(score_paths(pipeline, [path]))
    assert records and all(r["file"] == str(path) and r["status"] in STATUSES for r in records), records
    assert all((r["probability"] is not None) == (r["status"] == "ok") for r in records)
