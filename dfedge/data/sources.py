"""Labelled sets of aligned crops: an image folder (`real/`, `fake/`), a CSV/JSONL list, or the toy world.

`open_set(spec)` turns what a user types into a set:
  toy                 toy world, split "train" (400 samples)
  toy:val[:N]         another split, N samples
  toy:val:N:REGION    fakes manipulated in REGION (default: the probe's region; mixed: mouth, eyes, nose or face)
  toyvideo[:SPLIT[:N[:T]]]  N toy clips (default 25) of T frames (16), one sample per frame (see toyvideo.py)
  DIR                 DIR/real/* (label 0) and DIR/fake/* (label 1)
  LIST.csv|LIST.jsonl rows of path,label[,video] (label 0/1 or real/fake; paths relative to the list)
  celebdf:ROOT[:SPLIT][:landmarks=FILE]  Celeb-DF v2 videos, 32 aligned frames each (see celebdf.py)
  sbi:DIR             real crops in DIR, each also as a self-blended fake (see sbi.py)
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np

from ..models.writing import reading
from .images import IMAGE_SUFFIXES, read_crop
from .samples import LabelledSet, Sample

LABELS = {"0": 0, "1": 1, "real": 0, "fake": 1}
DEFAULT_TOY_COUNT = 400


class ToySet(LabelledSet):
    def __init__(self, split: str = "train", count: int = DEFAULT_TOY_COUNT, region: str = "mouth") -> None:
        from .synthetic import SPLITS

        if split not in SPLITS:
            raise ValueError(f"unknown toy split '{split}' (known: {', '.join(SPLITS)})")
        from ..models.region import REGIONS

        if region not in REGIONS and region != "mixed" or region == "all":
            raise ValueError(f"toy fakes manipulated in '{region}': use a region ({', '.join(r for r in REGIONS if r != 'all')}) or mixed")
        self.split, self.count, self.region = split, count, region
        self.description = f"toy:{split}:{count}:{region}"
        self._labels: np.ndarray | None = None

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Sample:
        from .synthetic import toy_sample

        s = toy_sample(index, self.split, self.region)
        sid = f"toy-{self.split}-{index:06d}"
        return Sample(id=sid, image=s.image, label=int(s.fake), video_id=sid)

    def labels(self) -> np.ndarray:
        if self._labels is None:
            from .synthetic import SPLITS

            # the real/fake draw is the first number of each item's own stream (see toy_sample)
            self._labels = np.array(
                [int(np.random.default_rng([SPLITS[self.split], i, 1]).random() < 0.5) for i in range(self.count)]
            )
        return self._labels


class FileSet(LabelledSet):
    """Crops listed as (path, label, video id)."""

    def __init__(self, rows: list[tuple[Path, int, str]], description: str) -> None:
        self.rows = rows
        self.description = description

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Sample:
        path, label, video = self.rows[index]
        return Sample(id=str(path), image=read_crop(path), label=label, video_id=video)

    def labels(self) -> np.ndarray:
        return np.array([r[1] for r in self.rows], dtype=np.int64)

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.description.encode())
        for path, label, _ in self.rows:
            st = path.stat()
            h.update(f"{path}|{label}|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]


def folder_set(root: str | Path) -> FileSet:
    root = Path(root)
    rows = []
    for name, label in (("real", 0), ("fake", 1)):
        sub = root / name
        if sub.is_dir():
            rows += [(p, label, p.stem) for p in sorted(sub.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not (root / "real").is_dir() and not (root / "fake").is_dir():
        raise ValueError(f"{root}: expected sub-folders real/ and fake/ of aligned crops")
    return FileSet(rows, f"folder:{root.resolve()}")


def _label(value: object, where: str) -> int:
    key = str(value).strip().lower()
    if key not in LABELS:
        raise ValueError(f"{where}: label '{value}' is not one of 0, 1, real, fake")
    return LABELS[key]


def list_set(path: str | Path) -> FileSet:
    path = Path(path)
    base = path.parent
    rows = []
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"{path}: cannot read list ({e.strerror})") from None
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                rel, label = rec["path"], rec["label"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{path}:{n}: expected a JSON object with 'path' and 'label'") from None
            p = base / rel
            rows.append((p, _label(label, f"{path}:{n}"), str(rec.get("video", p.stem))))
    else:
        for n, rec in enumerate(csv.reader(text.splitlines()), 1):
            if not rec or rec[0].startswith("#") or (n == 1 and rec[0].strip().lower() == "path"):
                continue
            if len(rec) < 2:
                raise ValueError(f"{path}:{n}: expected 'path,label[,video]'")
            p = base / rec[0].strip()
            rows.append((p, _label(rec[1], f"{path}:{n}"), rec[2].strip() if len(rec) > 2 else p.stem))
    missing = [str(p) for p, _, _ in rows if not p.is_file()]
    if missing:
        raise ValueError(f"{path}: {len(missing)} listed file(s) do not exist, first: {missing[0]}")
    return FileSet(rows, f"list:{path.resolve()}")


def open_set(spec: str, region: str = "mouth") -> LabelledSet:
    if spec == "toyvideo" or spec.startswith("toyvideo:"):
        from .toyvideo import open_toyvideo

        return open_toyvideo(spec)
    if spec == "toy" or spec.startswith("toy:"):
        parts = spec.split(":")
        split = parts[1] if len(parts) > 1 and parts[1] else "train"
        try:
            count = int(parts[2]) if len(parts) > 2 else DEFAULT_TOY_COUNT
        except ValueError:
            raise ValueError(f"'{spec}': the toy sample count must be an integer") from None
        if len(parts) > 3:
            region = parts[3]
        elif region == "all":  # a head over every token: fakes manipulated anywhere
            region = "mixed"
        return ToySet(split, count, region)
    if spec.startswith("sbi:"):
        from .sbi import SelfBlendSet

        return SelfBlendSet(spec[len("sbi:"):])
    if spec.startswith("celebdf:"):
        from .celebdf import open_celebdf

        return open_celebdf(spec[len("celebdf:") :])
    path = Path(spec)
    if path.is_dir():
        return folder_set(path)
    if path.is_file():
        return list_set(reading(path))
    raise ValueError(f"{spec}: no such folder or list file (or use 'toy', 'toy:val:500')")


def toy_crops(count: int, split: str = "val") -> np.ndarray:
    """Toy-world crops [N, 3, 448, 448] float32 0-255: what parity checks run on (they need no labels)."""
    return ToySet(split, count).crops()


def toy_photos(count: int = 3, seed: int = 0) -> list[np.ndarray]:
    """uint8 RGB photos [480, 640, 3] with two toy faces each (toy:test faces, 300 and 200 px wide) on a smooth
    random background: what the face front end's parity runs on (the kit's torch nets against a bundle's)."""
    import cv2

    rng = np.random.default_rng(seed)
    photos = []
    for i in range(count):
        photo = cv2.GaussianBlur(rng.uniform(40, 215, (480, 640, 3)).astype(np.uint8), (0, 0), 4)
        for k, (side, x, y) in enumerate(((300, 30, 90), (200, 400, 140))):
            face = ToySet("test", 2 * count)[2 * i + k].image
            photo[y : y + side, x : x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        photos.append(photo)
    return photos


def write_toy(out: Path, count: int, split: str = "test", region: str = "mouth", video: bool = False) -> dict[str, int]:
    """dfedge make-toy: `count` toy crops (PNG) or toy clips (mp4 of a talking face on a background, toyvideo:SPLIT)
    into out/real/ and out/fake/, each file written whole or not at all; -> {"real": n, "fake": n}."""
    from PIL import Image

    from ..models.writing import atomic_write
    from .synthetic import toy_sample
    from .toyvideo import toy_clip, write_clip

    counts = {"real": 0, "fake": 0}
    for i in range(count):
        if video:
            clip = toy_clip(i, split)
            kind = "fake" if clip.fake else "real"
            (out / kind).mkdir(parents=True, exist_ok=True)
            write_clip(out / kind / f"toyvideo-{split}-{i:05d}.mp4", clip.frames, seed=i)
        else:
            s = toy_sample(i, split, region)
            kind = "fake" if s.fake else "real"
            atomic_write(out / kind / f"toy-{split}-{i:05d}.png", lambda tmp: Image.fromarray(s.image).save(tmp, format="PNG"))
        counts[kind] += 1
    return counts
