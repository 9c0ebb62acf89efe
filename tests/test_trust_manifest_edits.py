"""Issue 31, causes 15-18: display matrices that are not rotations, manifest edits that must end in one line,
manifest fields with side effects, and the smaller ones (docs/security.md maps each test to its cause)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

IDENTITY = (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)  # a display matrix as MP4 stores it (16.16, 2.30)
QUARTER = (0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)  # a phone's portrait video: turned 90 degrees clockwise
MIRROR = (-0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def tiny_video(path: Path, matrix: tuple[int, ...], width: int = 32, height: int = 16) -> Path:
    """Three frames of `width` x `height` in an MP4 whose track header carries `matrix` (its tkhd box patched in
    place: the movie header's identity matrix comes first, the track's last)."""
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(3):
            ramp = np.linspace(0, 200, width, dtype=np.uint8)[None, :, None] + np.uint8(20 * i)  # dark left, bright right
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.broadcast_to(ramp, (height, width, 3))), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    at = data.rindex(struct.pack(">9i", *IDENTITY))
    path.write_bytes(data[:at] + struct.pack(">9i", *matrix) + data[at + 36:])
    return path


class FrameShapes:
    """A stand-in detector for scoring._video: it records the shape of every frame it is given, and whether its
    dark side is on the left (as stored)."""

    def score_video(self, frames, track, temporal, stride):
        return {"per_frame": [], "shapes": [(f.shape, bool(f[:, :4].mean() < f[:, -4:].mean())) for _, f in frames]}


@pytest.mark.parametrize("matrix, shape, said", [
    ((0,) * 9, ((16, 32, 3), True), "is not a rotation"),
    (MIRROR, ((16, 32, 3), True), "is not a rotation"),
    (QUARTER, ((32, 16, 3), False), "turned 270 degrees"),  # the control: a real rotation still turns the frames
])
def test_a_display_matrix_that_is_not_a_rotation_leaves_frames_as_stored(tmp_path, matrix, shape, said):
    """Cause 15: a display matrix of zeros (FFmpeg: 270 degrees) or a mirror (180 degrees) is ignored: the frames are
    used as stored and the video's record says so in `conversions`."""
    from dfedge.scoring import ScoreOptions, _video

    video = tiny_video(tmp_path / "v.mp4", matrix)
    record = _video(FrameShapes(), video, ScoreOptions(frames=3))
    assert record["shapes"] and set(record["shapes"]) == {shape}
    assert any(said in note for note in record.get("conversions", [])), record


def test_only_quarter_turns_are_read_from_a_display_matrix():
    """Cause 15 at its root: the turn a display matrix asks for is read only from a rotation by a quarter turn
    (times a uniform scale); zeros, mirrors, shears, other angles and projective rows give None (frames as stored)."""
    from dfedge.data.media import display_rotation

    assert display_rotation(IDENTITY) == 0
    assert display_rotation(QUARTER) == 270  # FFmpeg: -90, turned clockwise
    assert display_rotation((0, -0x10000, 0, 0x10000, 0, 0, 0, 0, 0x40000000)) == 90
    assert display_rotation((-0x10000, 0, 0, 0, -0x10000, 0, 0, 0, 0x40000000)) == 180
    assert display_rotation((0, 0x20000, 0, -0x20000, 0, 0, 0, 0, 0x40000000)) == 270  # scaled 2x
    c = round(0x10000 / 2 ** 0.5)
    for matrix in [(0,) * 9, MIRROR, (0x10000, 0, 0, 0, -0x10000, 0, 0, 0, 0x40000000),
                   (0x10000, 0x8000, 0, 0, 0x10000, 0, 0, 0, 0x40000000),  # a shear
                   (c, c, 0, -c, c, 0, 0, 0, 0x40000000),  # 45 degrees
                   (0x10000, 0, 1, 0, 0x10000, 0, 0, 0, 0x40000000),  # a projective row
                   (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0), (1, 2, 3)]:
        assert display_rotation(matrix) is None, matrix
