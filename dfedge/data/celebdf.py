"""Celeb-DF v2 as a labelled set of aligned face crops (DeepfakeBench's frame protocol).

Published layout under ROOT:
    Celeb-real/*.mp4  YouTube-real/*.mp4  (real)     Celeb-synthesis/*.mp4  (fake)
    List_of_testing_videos.txt            lines "<label> <path relative to ROOT>", where 1 = real, 0 = fake

Per video: decode with PyAV, take 32 frames spaced uniformly over the frames that decode (all of them when there
are fewer), find faces with a `FaceLocator`, keep the largest, align it to the kit's template (448 crop). Crops
are cached as PNG under CACHE/<locator name>/<video key>/<frame>.png, with a `video.json` record per video, so a
second run decodes nothing. Media that cannot be used (missing or unreadable file, no frames, a decode error, a
frame without a face) never stops the run: each is a `Problem` in `CelebDF.problems`, for the caller to report.

Samples: id "<video>#<frame>", video_id "<video>" (the path in the test list), label 1 = fake (the kit's).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..models.writing import atomic_write
from ..models.detector import CROP_SIZE, align_template
from .faces import FaceLocator, FrameRef, LandmarkFile, MTCNN, align, largest_face
from .media import FRAMES_PER_VIDEO, MediaError, decode_frames
from .images import read_crop
from .samples import LabelledSet, Sample

log = logging.getLogger(__name__)

FOLDERS = {"Celeb-real": 0, "YouTube-real": 0, "Celeb-synthesis": 1}  # kit labels: 1 = fake
TEST_LIST = "List_of_testing_videos.txt"
OFFICIAL_LABELS = {"1": 0, "0": 1}  # the test list's 1 = real, 0 = fake -> the kit's 0 = real, 1 = fake
SPLITS = ("test", "train", "all")  # the official test list; every other video; every video
RECORD = "video.json"
RECORD_VERSION = 2  # 2: crops from the numpy front end (models/frontend.py)


@dataclass(frozen=True)
class Problem:
    """Something that cost samples: `frame` None means the whole video (or, for kind 'short', its missing frames).
    kind: missing | unreadable | no frames | short | decode error | no face | bad landmarks."""

    video: str
    frame: int | None
    kind: str
    detail: str

    def __str__(self) -> str:
        where = self.video if self.frame is None else f"{self.video}#{self.frame}"
        return f"{where}: {self.kind}: {self.detail}"


def read_test_list(root: str | Path) -> list[tuple[str, int]]:
    """[(relative video path, kit label 1 = fake)] from ROOT/List_of_testing_videos.txt (official 1 = real)."""
    path = Path(root) / TEST_LIST
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"{path}: cannot read the Celeb-DF test list ({e.strerror})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or parts[0] not in OFFICIAL_LABELS:
            raise ValueError(f"{path}:{n}: expected '<1 real | 0 fake> <relative path>', got {line.strip()!r}")
        rel, label = parts[1].strip().replace("\\", "/"), OFFICIAL_LABELS[parts[0]]
        folder = rel.split("/", 1)[0]
        if folder in FOLDERS and FOLDERS[folder] != label:
            raise ValueError(f"{path}:{n}: label {parts[0]} means {'fake' if label else 'real'} in the official "
                             f"list (1 = real, 0 = fake), but {folder}/ holds {'fake' if FOLDERS[folder] else 'real'} "
                             "videos; is this list in another convention?")
        out.append((rel, label))
    return out


def list_videos(root: str | Path, split: str = "test") -> list[tuple[str, int]]:
    """[(relative path, kit label)] of a split: 'test' (the official list), 'train' (the rest), 'all'."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"unknown Celeb-DF split '{split}' (known: {', '.join(SPLITS)})")
    if split == "test":
        return read_test_list(root)
    every = [(p.relative_to(root).as_posix(), label) for folder, label in FOLDERS.items()
             for p in sorted((root / folder).glob("*.mp4"))]
    if split == "all":
        return every
    test = {rel for rel, _ in read_test_list(root)}
    return [(rel, label) for rel, label in every if rel not in test]


def default_cache_dir() -> Path:
    return Path(os.environ.get("DFEDGE_CACHE", Path.home() / ".cache" / "dfedge")) / "faces"


@dataclass
class _Video:
    crops: list[tuple[int, Path]]  # (frame index, cached crop)
    problems: list[Problem]


class CelebDF(LabelledSet):
    """Celeb-DF v2 frames as aligned crops. Videos are decoded on first use (`prepare`, or any of len, [],
    labels, problems) and their crops cached; `problems` lists every sample the protocol wanted but could not get."""

    unit = "video"  # an engine that fans out hands a worker whole videos

    def __init__(self, root: str | Path, locator: FaceLocator | None = None, split: str = "test",
                 frames: int = FRAMES_PER_VIDEO, cache_dir: str | Path | None = None, size: int = CROP_SIZE) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"{self.root}: no such Celeb-DF folder")
        self.split, self.frames, self.size = split, frames, size
        self.videos = list_videos(self.root, split)
        self.locator = locator if locator is not None else MTCNN()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.description = f"celebdf:{self.root.resolve()}:{split}:{frames}:{self.locator.name}:{size}"
        self._rows: list[tuple[str, int, int, Path]] | None = None  # (video, frame, label, crop)
        self._problems: list[Problem] = []

    # --- LabelledSet ---
    def __len__(self) -> int:
        return len(self.prepare()._rows)

    def __getitem__(self, index: int) -> Sample:
        video, frame, label, crop = self.prepare()._rows[index]
        return Sample(id=f"{video}#{frame}", image=read_crop(crop, self.size), label=label, video_id=video)

    def labels(self) -> np.ndarray:
        return np.array([r[2] for r in self.prepare()._rows], dtype=np.int64)

    def units(self) -> int:
        return len(self.videos)  # (without decoding anything: that is the work a unit is)

    def expand(self, unit: int) -> tuple[list[Sample], list[dict]]:
        """One video decoded, its faces located and aligned (or read from the cache): its samples in frame order and
        its problems, as `prepare` would list them."""
        rel, label = self.videos[unit]
        video = self._video(rel)
        samples = [Sample(id=f"{rel}#{frame}", image=read_crop(crop, self.size), label=label, video_id=rel)
                   for frame, crop in video.crops]
        return samples, [asdict(p) for p in video.problems]

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.description.encode())
        for rel, label in self.videos:
            p = self.root / rel
            st = p.stat() if p.is_file() else None
            h.update(f"{rel}|{label}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}".encode())
        return h.hexdigest()[:16]

    # --- Celeb-DF ---
    @property
    def problems(self) -> list[Problem]:
        return list(self.prepare()._problems)

    def problem_counts(self) -> dict[str, int]:
        """{kind: how many problems of that kind}."""
        return dict(Counter(p.kind for p in self.problems))

    def prepare(self, progress: Callable[[int, int], None] | None = None) -> CelebDF:
        """Decode, locate, align and cache every video not yet cached. `progress(done, total)` per video."""
        if self._rows is not None:
            return self
        rows, problems = [], []
        for k, (rel, label) in enumerate(self.videos):
            video = self._video(rel)
            rows += [(rel, frame, label, crop) for frame, crop in video.crops]
            problems += video.problems
            if progress is not None:
                progress(k + 1, len(self.videos))
        self._rows, self._problems = rows, problems
        if problems:
            log.warning("Celeb-DF %s: %d samples from %d videos; %s", self.split, len(rows), len(self.videos),
                        ", ".join(f"{n} {kind}" for kind, n in Counter(p.kind for p in problems).items()))
        return self

    def _cache_folder(self, rel: str, path: Path) -> Path:
        st = path.stat()
        key = json.dumps([str(path.resolve()), rel, st.st_size, st.st_mtime_ns, self.frames, self.size,
                          np.round(align_template(self.size), 4).tolist()])
        return self.cache_dir / self.locator.name / hashlib.sha256(key.encode()).hexdigest()[:24]

    def _video(self, rel: str) -> _Video:
        path = self.root / rel
        if not path.is_file():
            return _Video([], [Problem(rel, None, "missing", f"listed, but {path} does not exist")])
        folder = self._cache_folder(rel, path)
        cached = self._read_record(folder)
        if cached is not None:
            return cached
        video = self._extract(rel, path, folder)
        record = {"version": RECORD_VERSION, "video": rel, "locator": self.locator.name,
                  "crops": [[frame, crop.name] for frame, crop in video.crops],
                  "problems": [asdict(p) for p in video.problems]}
        atomic_write(folder / RECORD, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
        return video

    def _read_record(self, folder: Path) -> _Video | None:
        try:
            record = json.loads((folder / RECORD).read_text())
            if record.get("version") != RECORD_VERSION:
                return None
            crops = [(int(frame), folder / name) for frame, name in record["crops"]]
            if not all(crop.is_file() for _, crop in crops):
                return None
            return _Video(crops, [Problem(**p) for p in record["problems"]])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _extract(self, rel: str, path: Path, folder: Path) -> _Video:
        try:
            n, frames, error = decode_frames(path, self.frames)
        except MediaError as e:
            return _Video([], [Problem(rel, None, e.kind, e.detail)])
        problems = []
        if error is not None:
            problems.append(Problem(rel, None, "decode error", f"decoding stopped after {n} frames: {error}"))
        if n == 0:
            problems.append(Problem(rel, None, "no frames", "no frame decodes"))
        elif n < self.frames:
            problems.append(Problem(rel, None, "short", f"only {n} decodable frames ({self.frames} wanted); all used"))
        folder.mkdir(parents=True, exist_ok=True)
        crops = []
        for index, frame in frames.items():
            face = largest_face(self.locator.locate(frame, FrameRef(rel, index)))
            if face is None:
                problems.append(Problem(rel, index, "no face", f"{self.locator.name} found no face"))
                continue
            try:
                crop = align(frame, face.landmarks, size=self.size)
            except ValueError as e:
                problems.append(Problem(rel, index, "bad landmarks", str(e)))
                continue
            out = folder / f"{index:06d}.png"
            if not cv2.imwrite(str(out), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1]):
                raise OSError(f"{out}: cannot write the crop cache")
            crops.append((index, out))
        return _Video(crops, problems)


def open_celebdf(spec: str, cache_dir: str | Path | None = None) -> CelebDF:
    """The set for `ROOT[:SPLIT][:landmarks=FILE]` (what follows 'celebdf:' in a data spec).

    SPLIT: test (default, the official list), train or all. landmarks=FILE: take faces from a LandmarkFile
    (JSON/CSV from the user's own detector) instead of MTCNN."""
    parts, split, landmarks = spec.split(":"), "test", None
    while len(parts) > 1 and (parts[-1] in SPLITS or parts[-1].startswith("landmarks=")):
        last = parts.pop()
        if last in SPLITS:
            split = last
        else:
            landmarks = last[len("landmarks="):]
    root = ":".join(parts)
    if not root:
        raise ValueError("celebdf: expected 'celebdf:ROOT[:test|train|all][:landmarks=FILE]'")
    locator = LandmarkFile(landmarks) if landmarks else None
    return CelebDF(root, locator=locator, split=split, cache_dir=cache_dir)
