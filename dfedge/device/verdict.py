"""Verdicts: the status rules, the plausibility guard on the region's tokens, one face's verdict from its graph
outputs, and a video's verdict from its frames' (or its temporal windows')."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .faces import Face

# ok: scored. no_face: the photo or frame has none. no_region: the region index found no region token.
# implausible_region: region tokens where genuine aligned faces never have them (a misaligned crop, or a parser that
# does not know this face). unreadable: the file cannot be decoded. Only `ok` carries a probability and a decision.
STATUSES = ("ok", "no_face", "no_region", "implausible_region", "unreadable", "model_error")  # model_error: NaN/Inf out


def region_stats(token_mask: np.ndarray) -> tuple[int, float, float]:
    """(region tokens, centroid row, centroid column) of a token mask [g, g], in tokens; NaN centroid if empty."""
    mask = np.asarray(token_mask, np.float64).reshape(np.shape(token_mask)[-2:]) > 0.5
    count = int(mask.sum())
    if not count:
        return 0, float("nan"), float("nan")
    rows, cols = np.nonzero(mask)
    return count, float(rows.mean()), float(cols.mean())


def check_region(token_mask: np.ndarray, guard: dict | None, region: str = "region") -> tuple[str, str]:
    """(status, reason) of one face's token mask: no_region, implausible_region (outside the guard's bounds on the
    token count and centroid, fitted on genuine aligned faces), or ok. No guard: only no_region is checked."""
    count, row, col = region_stats(token_mask)
    if count == 0:
        return "no_region", f"no {region} token: the {region} was not found on this face"
    for name, value in (("tokens", count), ("row", row), ("col", col)):
        lo, hi = (guard or {}).get(name, (-np.inf, np.inf))
        if not lo <= value <= hi:
            return "implausible_region", (f"{region} tokens {count} centred at row {row:.1f}, column {col:.1f}: {name} "
                                          f"{value:.2f} is outside [{lo:.2f}, {hi:.2f}] seen on genuine aligned faces")
    return "ok", ""


@dataclass
class Verdict:
    """One face's verdict. probability, logit and decision are None unless status is ok."""

    status: str
    reason: str = ""
    probability: float | None = None
    logit: float | None = None
    decision: str | None = None  # fake | real, at the model's own threshold
    region_tokens: int = 0
    token_mask: np.ndarray | None = None  # bool [g, g]
    contributions: np.ndarray | None = None  # float32 [g, g]
    streams: list[float] | None = None  # the ensemble head's per-stream probabilities (None for one stream)
    face: Face | None = None  # where it was found (None for a given crop)
    crop: np.ndarray | None = None  # the aligned crop the model saw
    feature: np.ndarray | None = None  # float32 [D], the frame encoder's `feature` (ok verdicts of graphs that have it)

    def kept(self) -> Verdict:
        """What a video keeps of one frame's verdict once it is scored (and pushed to the temporal stream): all but
        the crop and the feature. A frame's crop is 0.6 MB: a 640-frame video kept 0.4 GB of them."""
        return replace(self, crop=None, feature=None)

    def record(self, top: int = 5) -> dict:
        """JSON-able: status, reason, the face (box, detector score, landmarks), the score and the top tokens."""
        out: dict = {"status": self.status, "reason": self.reason, "probability": self.probability,
                     "logit": self.logit, "decision": self.decision, "region_tokens": self.region_tokens}
        if self.streams is not None:
            out["streams"] = self.streams
        if self.face is not None:
            out["face"] = {"box": np.round(self.face.box.astype(np.float64), 2).tolist(),
                           "score": round(float(self.face.score), 4),
                           "landmarks": np.round(self.face.landmarks.astype(np.float64), 2).tolist()}
        if self.status == "ok" and self.contributions is not None:
            flat = self.contributions.reshape(-1)
            g = self.contributions.shape[-1]
            order = np.argsort(-np.abs(flat), kind="stable")[: min(top, self.region_tokens)]
            out["top_tokens"] = [{"row": int(i) // g, "col": int(i) % g, "contribution": float(flat[i])} for i in order]
        return out


def judge(outputs: dict, threshold: float, guard: dict | None = None, region: str = "region") -> Verdict:
    """The verdict of one crop's model outputs (logit, probability, token_mask, region_tokens, contributions)."""
    g = np.shape(outputs["token_mask"])[-1]
    mask = np.asarray(outputs["token_mask"]).reshape(g, g) > 0.5
    contributions = np.asarray(outputs["contributions"], np.float32).reshape(g, g)
    status, reason = check_region(mask, guard, region)
    verdict = Verdict(status, reason, region_tokens=int(mask.sum()), token_mask=mask, contributions=contributions)
    if status == "ok":
        logit = float(np.asarray(outputs["logit"]).reshape(-1)[0])
        probability = float(np.asarray(outputs["probability"]).reshape(-1)[0])
        if not (np.isfinite(logit) and np.isfinite(probability) and np.isfinite(contributions).all()):
            verdict.status, verdict.reason = "model_error", f"the model returned a non-finite score (logit {logit})"
            return verdict
        verdict.logit, verdict.probability = logit, probability
        if "feature" in outputs:
            verdict.feature = np.asarray(outputs["feature"], np.float32).reshape(-1)
        streams = np.asarray(outputs.get("streams", []), np.float64).reshape(-1)
        verdict.streams = [round(float(p), 6) for p in streams] if streams.size > 1 else None
        verdict.decision = "fake" if logit >= threshold else "real"
    return verdict


def no_face(min_face: int) -> Verdict:
    return Verdict("no_face", f"no face of at least {min_face} px found")


def video_record(frames: list[tuple[int, Verdict]], threshold: float, windows: list[dict] | None = None) -> dict:
    """The video's verdict from its frames': mean probability over the usable (ok) frames; with `windows` (the
    temporal head's, Stream), the mean logit of its windows whose status is ok, the frame mean kept beside it."""
    usable = [v for _, v in frames if v.status == "ok"]
    counts = {s: sum(v.status == s for _, v in frames) for s in STATUSES if any(v.status == s for _, v in frames)}
    record = {"frames": len(frames), "usable_frames": len(usable), "frame_statuses": counts,
              "per_frame": [dict(v.record(top=0), frame=i) for i, v in frames]}
    if not usable:
        status = "no_face" if not frames or counts.get("no_face", 0) == len(frames) else max(counts, key=counts.get)
        detail = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no frame decoded"
        if windows is not None:
            record.update(aggregation="temporal", windows=windows)
        return dict(record, status=status, reason=f"no frame with a usable region ({detail})", probability=None,
                    logit=None, decision=None)
    probability = float(np.mean([v.probability for v in usable]))
    p = min(max(probability, 1e-7), 1.0 - 1e-7)  # a finite logit for JSON when every frame's probability rounds to 0 or 1
    logit = float(np.log(p) - np.log1p(-p))
    decision = "fake" if logit >= threshold else "real"  # the logit of the mean probability, at the model's threshold
    record = dict(record, status="ok", reason="", probability=probability, logit=logit, decision=decision)
    return record if windows is None else temporal_record(record, windows)


def temporal_record(frame_mean: dict, windows: list[dict]) -> dict:
    """A video's record whose verdict is the temporal head's: the mean logit of its ok windows (status no_region
    when none), with `windows` and the frame mean's verdict as `frame_mean`."""
    keys = ("status", "reason", "probability", "logit", "decision")
    out = {k: v for k, v in frame_mean.items() if k not in keys}
    out.update(aggregation="temporal", windows=windows, frame_mean={k: frame_mean[k] for k in keys})
    ok = [w for w in windows if w["status"] == "ok"]
    if not ok:
        return dict(out, status="no_region", reason=f"no window of {len(windows)} had enough usable frames",
                    probability=None, logit=None, decision=None)
    logit = float(np.mean([w["logit"] for w in ok]))
    return dict(out, status="ok", reason="", probability=float(1.0 / (1.0 + np.exp(-logit))), logit=logit,
                decision="fake" if logit >= ok[0]["threshold"] else "real")
