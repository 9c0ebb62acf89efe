"""The pipeline around a model runner and a face detector: a photo of any size, a video's frames or an aligned crop
-> verdicts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .align import align
from .faces import Face, FaceDetector, face_from_landmarks
from .faces.types import MIN_FACE
from .stream import Stream
from .verdict import Verdict, judge, no_face, video_record


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes x1, y1, x2, y2."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


@dataclass
class Scorer:
    """An image (any size), a video's frames or an aligned crop -> verdicts, around a model runner and a face
    detector. The kit builds one on torch (`dfedge score`), a bundle on its own runtime (bench.py, dfedge.load)."""

    run: object  # float32 [1, 3, S, S] RGB 0-255 -> {logit, probability, token_mask, region_tokens, contributions}
    threshold: float  # on the logit: decision fake when logit >= threshold
    template: np.ndarray  # [5, 2] landmark positions in the aligned crop (pixel-index coordinates)
    crop_size: int
    guard: dict | None = None  # bounds on region token count and centroid (check_region); None: no guard
    region: str = "region"  # the region's name, in reasons
    detector: FaceDetector | None = None  # None: only crops, or images with landmarks given

    @property
    def min_face(self) -> int:
        """Faces whose box side is shorter are not scored."""
        return self.detector.min_face if self.detector is not None else MIN_FACE  # landmarks given

    def score_crop(self, crop: np.ndarray) -> Verdict:
        """One aligned uint8 crop [S, S, 3]."""
        x = np.ascontiguousarray(np.asarray(crop, np.float32).transpose(2, 0, 1)[None])
        verdict = judge(self.run(x), self.threshold, self.guard, self.region)
        verdict.crop = crop
        return verdict

    def faces(self, image: np.ndarray, landmarks=None) -> list[Face]:
        """The faces to score in `image`, largest first: detected, or the one whose 5 landmarks are given."""
        if landmarks is not None:
            return [face_from_landmarks(landmarks)]
        if self.detector is None:
            raise ValueError("this scorer has no face detector: pass the 5 landmarks of the face")
        found = self.detector.detect(image)
        found = [f for f in found if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= self.min_face]
        return sorted(found, key=lambda f: -f.area)

    def score_face(self, image: np.ndarray, face: Face) -> Verdict:
        verdict = self.score_crop(align(image, face.landmarks, self.template, self.crop_size))
        verdict.face = face
        return verdict

    def score_image(self, image: np.ndarray, landmarks=None, faces: str = "all") -> list[Verdict]:
        """Every face of a uint8 RGB image [H, W, 3] (`faces`: all, or the largest), largest first; one no_face
        verdict when there is none."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
        found = self.faces(image, landmarks)
        if not found:
            return [no_face(self.min_face)]
        return [self.score_face(image, f) for f in (found if faces == "all" else found[:1])]

    def score_video(self, frames, track: str = "iou", stream: Stream | None = None) -> dict:
        """One face followed over the frames [(index, image)], read one at a time: the largest face in each frame
        (`largest`), or the one that overlaps the face followed so far the most (`iou`, starting from the first
        frame's largest; when none overlaps, sampled frames being far apart, the one whose centre is nearest). The
        video's probability is the mean over frames whose status is ok; `per_frame` lists every sampled frame's.
        With a `stream` (SDR's temporal head) every frame is pushed to it as it is scored, and the video's verdict is
        the temporal head's (`video_record`)."""
        records, last, windows = [], None, []
        for index, image in frames:
            face = follow(self.faces(image), last, track)
            verdict = self.score_face(image, face) if face else Verdict("no_face", "no face followed in this frame")
            last = face or last
            if stream is not None:
                windows += stream.push(int(index), verdict)
            records.append((int(index), verdict.kept()))  # the frame and its crop go with this iteration
        if stream is not None:
            windows += stream.flush()
        return video_record(records, self.threshold, windows if stream is not None else None)


def follow(found: list[Face], last: Face | None, track: str = "iou") -> Face | None:
    """The face to score in this frame, given the faces found (largest first) and the one followed so far."""
    if last is not None and track == "iou" and found:
        best = max(found, key=lambda f: iou(f.box, last.box))
        if iou(best.box, last.box) <= 0.3:
            centre = (last.box[:2] + last.box[2:]) / 2
            best = min(found, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre)))
        return best
    return found[0] if found else None


