"""Issue 31, causes 10 and 11: samples and frames stream (only their results are kept), a set the host cannot hold
is refused in one line, and video frames obey --max-pixels (docs/security.md maps them). The peak RSS at two sizes
is measured by benchmarks/streaming_memory.py, not here."""

from __future__ import annotations

import json
import subprocess
import sys
import weakref
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from dfedge.cli import app
from dfedge.data.samples import LabelledSet, Sample
from dfedge.device.errors import BundleError
from dfedge.device.faces import Face
from dfedge.device.scorer import Scorer
from dfedge.device.stream import Stream
from dfedge.device.timing import time_video
from dfedge.device.video import read_video
from dfedge.eval.scores import score_set
from dfedge.models.detector import ALIGN_TEMPLATE

runner = CliRunner()
G = 4  # the fake graphs' token grid


def outputs(batch: int, feature: int = 8) -> dict:
    """What a detector graph returns for `batch` crops: a region of 3 tokens, logit 1."""
    mask = np.zeros((batch, G, G), np.float32)
    mask[:, 1, 1:] = 1.0
    return {"logit": np.ones((batch, 1), np.float32), "probability": np.full((batch, 1), 0.73, np.float32),
            "region_tokens": np.full((batch, 1), 3.0, np.float32), "token_mask": mask,
            "contributions": mask / 3, "feature": np.ones((batch, feature), np.float32)}


class Tracked(LabelledSet):
    """`count` samples of 8 x 8 images, each image watched (weakref) to see how many are alive at once."""

    def __init__(self, count: int) -> None:
        self.count, self.description, self.watch = count, f"tracked:{count}", []

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Sample:
        image = np.full((8, 8, 3), index % 256, np.uint8)
        self.watch.append(weakref.ref(image))
        return Sample(id=f"s{index}", image=image, label=index % 2, video_id=f"s{index}")

    def labels(self) -> np.ndarray:
        return np.arange(self.count) % 2

    def alive(self) -> int:
        return sum(ref() is not None for ref in self.watch)


def test_reference_keeps_no_sample_images():
    """Cause 10: scoring a set (what `dfedge reference` runs) keeps each sample's results, never its image: the
    images alive at any time are one batch's, however many samples came before."""
    data, most = Tracked(24), []

    def run(x):
        most.append(data.alive())
        return outputs(len(x))

    scores = score_set(run, data, batch=2)
    assert len(scores) == 24 and scores.scored.all()
    assert max(most) <= 2 * 2, most  # this batch's (and, at most, the last one's until it is replaced)


class OneFace:
    """A face detector that finds the template's face in every frame (the frames are aligned crops already)."""

    min_face = 1

    def __init__(self, crop: int) -> None:
        self.landmarks = (ALIGN_TEMPLATE * crop / 448).astype(np.float32)

    def detect(self, image):
        return [Face(np.array([0, 0, image.shape[1], image.shape[0]], np.float32), 0.99, self.landmarks)]

    def with_min_face(self, min_face):
        return self


def test_video_scoring_keeps_no_frame_crops(tmp_path):
    """Cause 10: a video's frames flow through one at a time and only each frame's verdict (status, score, mask) is
    kept: the aligned crops alive at any time are the current frame's, in `dfedge score` (Scorer.score_video) and
    in a bundle's `bench.py --video` (timing.time_video) alike."""
    crop, frames = 32, 24
    watched = []

    class Watching(Scorer):
        def score_crop(self, image):
            verdict = super().score_crop(image)
            watched.append(weakref.ref(verdict.crop))
            return verdict

    most = []

    def run(x):
        most.append(sum(ref() is not None for ref in watched))
        return outputs(1)

    scorer = Watching(run, 0.0, (ALIGN_TEMPLATE * crop / 448).astype(np.float32), crop, detector=OneFace(crop))
    clip = np.random.default_rng(0).integers(0, 256, (frames, crop, crop, 3), dtype=np.uint8)

    def stream():
        return Stream(lambda x: {"logit": np.zeros((1, 1), np.float32)}, 4, 8, 0.0)

    record = scorer.score_video(((i, f) for i, f in enumerate(clip)), stream=stream())
    assert record["frames"] == frames and record["usable_frames"] == frames and len(record["windows"]) == frames // 4
    assert max(most) <= 2, most

    np.save(tmp_path / "clip.npy", clip)
    watched.clear(), most.clear()
    timed = time_video(scorer, stream(), tmp_path / "clip.npy")
    assert timed["frames"] == frames
    assert max(most) <= 2, most


def test_a_set_beyond_the_hosts_memory_is_refused_in_one_line(tmp_path):
    """Cause 10: `dfedge reference --data toy:val:999999999` is refused in one line naming the limit (the samples
    this host's memory holds, from what is kept per sample) after its first batch, with nothing written; the progress
    callback has seen that batch."""
    out = tmp_path / "huge.scores"
    try:
        result = subprocess.run([sys.executable, "-m", "dfedge.cli", "reference", "--data", "toy:val:999999999", "--out", str(out)],
                                capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("toy:val:999999999 was still running after 120 s: not refused")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "999,999,999 samples" in lines[0] and "holds at most" in lines[0] and "GB" in lines[0], lines[0]
    assert not list(tmp_path.iterdir())

    seen = []
    with pytest.raises(ValueError, match="holds at most"):
        score_set(lambda x: outputs(len(x)), Tracked(999_999_999), batch=3, progress=seen.append)
    assert seen == [3]


def big_video(path: Path, side: int = 2400, frames: int = 2) -> Path:
    """An H.264 clip of `frames` grey side x side frames: a few KB that decode to side² pixels each."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = side, side, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        frame = av.VideoFrame.from_ndarray(np.full((side, side, 3), 128, np.uint8), format="rgb24")
        for _ in range(frames):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_video_frames_obey_max_pixels(tmp_path):
    """Cause 11: a video whose frames would decode to more than --max-pixels is refused from the size its stream
    declares, in one line naming the file and the limit: `dfedge score` gives it an `unreadable` record, a bundle's
    reader (bench.py --video) a BundleError. 5.76-MP frames against a 4-MP limit stand in for the 81-MP ones."""
    clip = big_video(tmp_path / "big.mp4")
    assert clip.stat().st_size < 100_000
    out = tmp_path / "records.jsonl"
    result = runner.invoke(app, ["score", str(clip), "--max-pixels", "4000000", "--output", str(out)])
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["status"] == "unreadable", record
    assert record["reason"] == f"{clip}: 2400x2400 pixels a frame, over the limit of 4 MP (--max-pixels)"
    assert "frames_decoded" not in record  # refused before a frame decoded

    with pytest.raises(BundleError, match=r"big\.mp4: 2400x2400 pixels a frame, over the limit of 4 MP"):
        list(read_video(clip, max_pixels=4_000_000))
    assert len(list(read_video(clip))) == 2  # under the default limit (64 MP) it decodes as before
