"""Toy videos: clips of one toy face that talks, moves and is relit, and their fakes, for video-level heads.

A clip is one identity (synthetic.render_face) under smoothly changing `FrameState`s: the mouth opens and closes
like speech, the head drifts slightly (the crops stay aligned, as a front end would keep them) and the light
changes slowly. A fake clip is its real clip with the mouth self-blended in every frame, but with parameters that
jump from frame to frame (blend strength, some frames untouched, mask, detail, a colour tint of random sign), so
one frame alone is only weakly fake while the frames of a fake disagree with each other. Every clip is a pure
function of (index, split, frames), and the first frames of a longer clip are the shorter clip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .samples import LabelledSet, Sample
from .synthetic import SPLITS, FrameState, render_face

# Clips draw their faces from the toy splits' seeds moved by this offset: other identities than toy_sample's.
VIDEO_SEED_OFFSET = 100_000
DEFAULT_FRAMES = 16
DEFAULT_CLIPS = 25

# A fake frame's blend strength: 0 (untouched) with FAKE_SKIP, else uniform in [0, FAKE_STRENGTH]. Calibrated on the
# shipped toy detector (every val clip scored both real and fake, 60 x 8 frames): single-frame AUC of the mouth
# probe ~0.55, clip-mean probability AUC ~0.71, while the mean frame-to-frame jump of the mouth feature alone
# separates the clips at ~0.85.
FAKE_STRENGTH = 1.2
FAKE_SKIP = 0.2
# The per-frame colour tint: hue shift (OpenCV units) and saturation factor 1 -/+ up to this, each of random sign:
# the factor is 1 on average, a generator whose colour drifts from frame to frame rather than a consistent bias.
FAKE_TINT = (8.0, 0.7)
FAKE_DETAIL = ("smooth", "sharp")


@dataclass
class ToyClip:
    frames: np.ndarray  # uint8 [T, 448, 448, 3] aligned crops
    fake: bool
    labels: np.ndarray  # uint8 [T, 448, 448] LaPa label maps (of the real frames)
    landmarks: np.ndarray  # float32 [T, 5, 2]
    strengths: np.ndarray  # float32 [T]: each frame's blend strength (0: untouched; all 0 for a real clip)
    states: list[FrameState]


def _seed(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown toy split '{split}' (known: {', '.join(SPLITS)})")
    return SPLITS[split] + VIDEO_SEED_OFFSET


def _wave(rng: np.random.Generator, t: np.ndarray, periods: tuple[float, float]) -> np.ndarray:
    """A unit sinusoid of random period (frames) and phase."""
    return np.sin(2 * np.pi * t / rng.uniform(*periods) + rng.uniform(0, 2 * np.pi))


def clip_states(rng: np.random.Generator, frames: int) -> list[FrameState]:
    """Smooth per-frame states: speech-like mouth opening (an oscillation of random period, phase and level,
    closed below 1.5 px), slow head rotation/shift/scale drift and slow lighting changes. Every parameter is drawn
    before any frame, so a clip's first frames do not depend on its length."""
    t = np.arange(frames, dtype=np.float64)
    level, amp, slow = rng.uniform(2, 10), rng.uniform(3, 7), rng.uniform(0, 3)
    opening = level + amp * _wave(rng, t, (6, 12)) + slow * _wave(rng, t, (20, 40))
    opening = np.where(opening < 1.5, 0.0, np.minimum(opening, 20.0))
    angle = rng.uniform(-2, 2) + rng.uniform(0, 2) * _wave(rng, t, (16, 48))
    shift = [rng.uniform(-3, 3) + rng.uniform(0, 3) * _wave(rng, t, (16, 48)) for _ in range(2)]
    scale = 1 + rng.uniform(-0.02, 0.02) + rng.uniform(0, 0.02) * _wave(rng, t, (16, 48))
    gain = 1 + rng.uniform(0, 0.06) * _wave(rng, t, (16, 48))
    light = rng.uniform(0, 0.4) * _wave(rng, t, (16, 48))
    return [FrameState(opening=float(opening[i]), angle=float(angle[i]), shift=(float(shift[0][i]), float(shift[1][i])),
                       scale=float(scale[i]), gain=float(gain[i]), light_angle=float(light[i])) for i in range(frames)]


def clip_is_fake(index: int, split: str = "train", fake_fraction: float = 0.5) -> bool:
    """Whether clip `index` is fake, without rendering: the first draw of the clip's own stream."""
    return bool(np.random.default_rng([_seed(split), index, 1]).random() < fake_fraction)


def _fake_frame(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """One frame's mouth self-blend with its own parameters: (image, blend strength)."""
    from .blend import region_mask, self_blend

    if rng.random() < FAKE_SKIP:
        return image, 0.0
    strength = float(rng.uniform(0, FAKE_STRENGTH))
    mask = region_mask(labels, "mouth")
    grow = int(rng.integers(-2, 5))  # the mask itself jitters: eroded or grown by a few pixels
    if grow:
        op = cv2.dilate if grow > 0 else cv2.erode
        jittered = op(mask, np.ones((3, 3), np.uint8), iterations=abs(grow))
        mask = jittered if jittered.max() > 0 else mask
    sign, size = rng.choice([-1.0, 1.0], 2), rng.uniform(0.3, 1, 2)
    tint = (float(sign[0] * size[0] * FAKE_TINT[0]), float(1 + sign[1] * size[1] * FAKE_TINT[1]))
    detail = str(rng.choice(FAKE_DETAIL))
    fake, _ = self_blend(image, mask, rng, strength=strength, detail=detail, tint=tint)
    return fake, strength


def toy_clip(index: int, split: str = "train", frames: int = DEFAULT_FRAMES, fake_fraction: float = 0.5) -> ToyClip:
    """Clip `index` of a toy split: `frames` aligned crops of one talking face, real or (with probability
    `fake_fraction`) with a temporally inconsistent mouth self-blend. A pure function of its arguments."""
    if frames < 1:
        raise ValueError(f"a toy clip needs at least one frame, got {frames}")
    seed = _seed(split)
    rng = np.random.default_rng([seed, index, 1])
    fake = bool(rng.random() < fake_fraction)  # first draw: clip_is_fake
    states = clip_states(rng, frames)
    images, labels, landmarks, strengths = [], [], [], np.zeros(frames, np.float32)
    for t, state in enumerate(states):
        face = render_face(seed, index, state=state)
        image = face.image
        if fake:
            image, strengths[t] = _fake_frame(image, face.labels, np.random.default_rng([seed, index, 2, t]))
        images.append(image)
        labels.append(face.labels)
        landmarks.append(face.landmarks)
    return ToyClip(frames=np.stack(images), fake=fake, labels=np.stack(labels), landmarks=np.stack(landmarks),
                   strengths=strengths, states=states)


class ToyVideoSet(LabelledSet):
    """`count` toy clips of `frames` frames as per-frame samples in clip order (toyvideo:SPLIT:N:T). Frames read
    in order cost one render each: the last clip is kept."""

    unit = "video"  # an engine that fans out hands a worker whole videos

    def __init__(self, split: str = "train", count: int = DEFAULT_CLIPS, frames: int = DEFAULT_FRAMES) -> None:
        _seed(split)
        if count < 1 or frames < 1:
            raise ValueError(f"'toyvideo:{split}:{count}:{frames}': the clip count and frames per clip must be positive")
        self.split, self.count, self.frames_per_clip = split, count, frames
        self.description = f"toyvideo:{split}:{count}:{frames}"
        self._clip: tuple[int, ToyClip] | None = None
        self._labels: np.ndarray | None = None

    def __len__(self) -> int:
        return self.count * self.frames_per_clip

    def video_id(self, clip: int) -> str:
        return f"toyvideo-{self.split}-{clip:06d}"

    def clip(self, clip: int) -> ToyClip:
        if self._clip is None or self._clip[0] != clip:
            self._clip = (clip, toy_clip(clip, self.split, self.frames_per_clip))
        return self._clip[1]

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} of {self.description} ({len(self)} samples)")
        clip, frame = divmod(index, self.frames_per_clip)
        c = self.clip(clip)
        vid = self.video_id(clip)
        return Sample(id=f"{vid}#{frame:02d}", image=c.frames[frame].copy(), label=int(c.fake), video_id=vid)

    def units(self) -> int:
        return self.count

    def expand(self, unit: int) -> tuple[list[Sample], list[dict]]:
        """A clip's frames, rendered once."""
        return [self[unit * self.frames_per_clip + k] for k in range(self.frames_per_clip)], []

    def labels(self) -> np.ndarray:
        if self._labels is None:
            per_clip = [int(clip_is_fake(i, self.split)) for i in range(self.count)]
            self._labels = np.repeat(np.array(per_clip, dtype=np.int64), self.frames_per_clip)
        return self._labels

    def clips(self) -> list[tuple[str, int, list[int]]]:
        """(video id, label, sample indices) per clip."""
        labels, t = self.labels(), self.frames_per_clip
        return [(self.video_id(i), int(labels[i * t]), list(range(i * t, (i + 1) * t))) for i in range(self.count)]


def open_toyvideo(spec: str) -> ToyVideoSet:
    """The set `toyvideo[:SPLIT[:N[:T]]]` names (sources.open_set)."""
    parts = spec.split(":")
    if parts[0] != "toyvideo" or len(parts) > 4:
        raise ValueError(f"'{spec}': expected toyvideo[:SPLIT[:N[:T]]]")
    split = parts[1] if len(parts) > 1 and parts[1] else "train"
    try:
        count = int(parts[2]) if len(parts) > 2 and parts[2] else DEFAULT_CLIPS
        frames = int(parts[3]) if len(parts) > 3 and parts[3] else DEFAULT_FRAMES
    except ValueError:
        raise ValueError(f"'{spec}': the clip count and frames per clip must be integers") from None
    return ToyVideoSet(split, count, frames)


def write_clip(path: str | Path, frames, fps: int = 8, size: tuple[int, int] = (640, 480), face_side: int = 240,
               seed: int = 0) -> Path:
    """An .mp4 (H.264, else MPEG-4 Part 2) of the aligned crops `frames` [T, S, S, 3] resized to `face_side` and
    pasted on a smooth random background (`size` = (width, height)) at a slowly drifting position, as the face
    front end would find them. Written to a temporary file, then renamed."""
    import av

    path = Path(path)
    width, height = size
    if face_side > min(width, height):
        raise ValueError(f"a {face_side}px face does not fit a {width}x{height} frame")
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.uniform(40, 215, (height, width, 3)).astype(np.uint8), (0, 0), 4)
    room = np.array([width - face_side, height - face_side], np.float64)
    position = rng.uniform(0.2, 0.8, 2) * room
    heading = rng.uniform(0, 2 * np.pi)
    velocity = rng.uniform(0.5, 2.5) * np.array([np.cos(heading), np.sin(heading)])  # px per frame
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": "18", "preset": "veryfast"}
            else:
                stream.bit_rate = 8_000_000
            for crop in frames:
                frame = background.copy()
                x, y = np.round(position).astype(int)
                frame[y : y + face_side, x : x + face_side] = cv2.resize(crop, (face_side, face_side), interpolation=cv2.INTER_AREA)
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
                position += velocity
                bounced = (position < 0) | (position > room)  # drift back from the frame's edges
                velocity[bounced] *= -1
                position = np.clip(position, 0, room)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
