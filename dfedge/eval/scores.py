"""Per-sample scores of one model on one labelled set: the unit every comparison in the kit works on.

File format (`.scores`, schema dfedge-scores/1): a compressed NumPy `.npz` a user opens with `np.load` — arrays
`ids`, `video_ids` (unicode), `labels` (int8, 1 = fake), `logits`, `probabilities` (float32), `region_tokens`
(int32), `token_masks` (bool [N, g, g]), `contributions` (float16 [N, g, g]) and `header`, one JSON string
(schema, model, data, device, threshold, versions, problems). No pickled objects anywhere.
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .._version import __version__
from ..device.host import memory_bytes
from ..models.writing import atomic_write, reading

SCHEMA = "dfedge-scores/1"
ARRAYS = ("ids", "video_ids", "labels", "logits", "probabilities", "region_tokens", "token_masks", "contributions")

# images [B, 3, 448, 448] float32 0-255 -> dict with at least logit, probability, region_tokens, token_mask,
# contributions (the detector's outputs); the torch detector and every bundle runtime fit this.
Runner = Callable[[np.ndarray], dict]


@dataclass
class Scores:
    ids: np.ndarray
    video_ids: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    probabilities: np.ndarray
    region_tokens: np.ndarray
    token_masks: np.ndarray
    contributions: np.ndarray
    header: dict = field(default_factory=dict)
    features: np.ndarray | None = None  # [N, D] the frame encoder's `feature` output, when asked for (not saved)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def threshold(self) -> float:
        return float(self.header.get("threshold", 0.0))

    @property
    def scored(self) -> np.ndarray:
        """Samples with a usable score (at least one region token)."""
        return self.region_tokens > 0


class ScoresError(ValueError):
    """A scores file that cannot be read or does not match what it is compared with."""


def save_scores(path: str | Path, scores: Scores) -> Path:
    header = dict(scores.header, schema=SCHEMA, count=len(scores))
    arrays = {
        "ids": scores.ids.astype(str), "video_ids": scores.video_ids.astype(str),
        "labels": scores.labels.astype(np.int8), "logits": scores.logits.astype(np.float32),
        "probabilities": scores.probabilities.astype(np.float32),
        "region_tokens": scores.region_tokens.astype(np.int32), "token_masks": scores.token_masks.astype(bool),
        "contributions": scores.contributions.astype(np.float16), "header": np.array(json.dumps(header, sort_keys=True)),
    }

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare path
            np.savez_compressed(f, **arrays)

    return atomic_write(path, write)


def load_scores(path: str | Path) -> Scores:
    path = reading(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ScoresError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:  # truncated, corrupt, a folder
        raise ScoresError(f"{path}: not a readable scores file (truncated or corrupt: {str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    missing = [k for k in (*ARRAYS, "header") if k not in data]
    if missing:
        raise ScoresError(f"{path}: not a scores file (missing {', '.join(missing)})")
    try:
        header = json.loads(str(data["header"]))
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict):
        raise ScoresError(f"{path}: not a scores file (its header is not a JSON object)")
    if header.get("schema") != SCHEMA:
        raise ScoresError(f"{path}: schema {header.get('schema')!r}, expected {SCHEMA}")
    n = len(data["ids"])
    if any(len(data[k]) != n for k in ARRAYS):
        raise ScoresError(f"{path}: arrays of different lengths")
    return Scores(**{k: data[k] for k in ARRAYS}, header=header)


# An engine scores a LabelledSet: engine(run, data, *, batch, progress, features, recipe) -> Scores. `score_set` is
# the one-process engine; dfedge.distributed.RayEngine fans the same work out to a pool of Ray actors, each opening
# the runner from `recipe` (runtimes.recipe.Recipe), which the one-process engine does not need.
OUTPUTS = ("logit", "probability", "region_tokens", "token_mask", "contributions")


def score_set(run: Runner, data, batch: int = 1, transform=None, progress=None, features: bool = False,
              recipe=None) -> Scores:
    """Score every sample of `data` (a LabelledSet). `transform(image_uint8_hwc, index)` degrades inputs; `features`
    keeps the graphs' `feature` output in Scores.features; `recipe` is for engines that open the runner elsewhere."""
    n = len(data)
    if n == 0:
        raise ValueError(f"{getattr(data, 'description', 'the data')}: no samples to score")
    if run is None:
        run = recipe.open()
    rows, outs = [], []  # what is kept of each sample: its id, video and label, and the graph's outputs (no image)
    for start in range(0, n, batch):
        samples = [data[i] for i in range(start, min(n, start + batch))]
        images = [s.image if transform is None else transform(s.image, start + k) for k, s in enumerate(samples)]
        outs.append(run_batch(run, images, features))
        rows += [(s.id, s.video_id, s.label) for s in samples]
        if progress is not None:
            progress(len(samples))
        if start == 0:
            check_fits(n, kept_bytes(rows, outs[0]), getattr(data, "description", "the data"))
    return assemble(rows, outs, data)


# A set's kept results exist about this many times over at their peak: the batches, their concatenation (assemble),
# and the file's arrays and compression buffers (save_scores).
KEPT_COPIES = 3


def kept_bytes(rows: list[tuple[str, str, int]], out: dict[str, np.ndarray]) -> int:
    """Bytes kept per sample: its outputs (`out`, one batch of run_batch's), its id and video id (NumPy unicode, 4
    bytes a character) and label, and its row until then (a tuple of two str and an int: about 200 bytes)."""
    outputs = sum(np.asarray(v).nbytes for v in out.values())
    return -(-outputs // len(rows)) + 4 * max(len(r[0]) + len(r[1]) for r in rows) + 1 + 200


def check_fits(count: int, per_sample: int, what: str) -> None:
    """Refuse (ValueError, one line) a set whose kept results this host cannot hold: `count` samples of `per_sample`
    bytes, KEPT_COPIES times over, against its memory (device.host.memory_bytes; unknown: not checked)."""
    memory = memory_bytes()
    if memory is None or count * per_sample * KEPT_COPIES <= memory:
        return
    limit = memory // (per_sample * KEPT_COPIES)
    raise ValueError(f"{what}: {count:,} samples would keep {count * per_sample * KEPT_COPIES / 1e9:,.1f} GB of results "
                     f"({per_sample:,} bytes each, {KEPT_COPIES} copies at the peak); this host's {memory / 1e9:.1f} GB "
                     f"holds at most {limit:,} samples: score a smaller set, or split it")


def run_batch(run: Runner, images: list[np.ndarray], features: bool = False) -> dict[str, np.ndarray]:
    """One forward pass over uint8 HWC crops -> the outputs a Scores keeps, each [B, ...]."""
    x = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32)
    out = run(x)
    keep = OUTPUTS + (("feature",) if features else ())
    return {k: np.asarray(out[k]).reshape(len(images), *np.asarray(out[k]).shape[1:]) for k in keep}


def assemble(rows: list[tuple[str, str, int]], outs: list[dict[str, np.ndarray]], data) -> Scores:
    """Scores from (id, video id, label) per sample and the batches of outputs computed on them, in that order."""
    cat = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    g = cat["token_mask"].shape[-1]
    return Scores(
        ids=np.array([r[0] for r in rows], dtype=str), video_ids=np.array([r[1] for r in rows], dtype=str),
        labels=np.array([r[2] for r in rows], dtype=np.int8), logits=cat["logit"].reshape(-1),
        probabilities=cat["probability"].reshape(-1), region_tokens=np.rint(cat["region_tokens"].reshape(-1)).astype(np.int32),
        token_masks=cat["token_mask"].reshape(-1, g, g) > 0.5, contributions=cat["contributions"].reshape(-1, g, g),
        header={"kit": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "data": getattr(data, "description", "")},
        features=cat["feature"].reshape(len(rows), -1).astype(np.float32) if "feature" in cat else None,
    )


def check_same_samples(reference: Scores, artifact: Scores) -> None:
    if len(reference) != len(artifact) or not np.array_equal(reference.ids, artifact.ids):
        raise ScoresError(f"the artifact was scored on other samples than the reference "
                          f"({len(artifact)} vs {len(reference)}; data {artifact.header.get('data')!r} vs "
                          f"{reference.header.get('data')!r})")
    if not np.array_equal(reference.labels, artifact.labels):
        raise ScoresError("the artifact's labels differ from the reference's for the same sample ids")
