"""The gate every bundle passes before it ships, whatever made it (an exporter, a quantizer, a region-index rung):

1. **parity**: the converted graph computes what its own torch graph computes, on a few crops, within the limits of
   its precision (`PARITY`); a quantized rung has no logit limit there, only a token-mask agreement;
2. **AUC drift** (`Gate`): on a labelled validation split, against the reference's scores (torch FP32 of the exact
   detector, `Validation`), the AUC may drop by at most the budget and the token masks must agree.

Runners are passed in (images float32 [B, 3, S, S] 0-255 -> {output name: array}); this module runs no model of
its own, so the same gate serves the torch reference and every runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.samples import LabelledSet
from ..device.align import align
from ..device.faces import FaceDetector
from ..device.scorer import iou
from .metrics import delong_auc_variance
from .scores import Runner, Scores, score_set
from .validate import Budget, compare

# Parity limits against the rung's own torch graph, per precision, on the logit error |Δlogit| / max(1, |logit|):
# absolute near the decision threshold, relative for confident faces (fp16 keeps ~3 significant digits, so a toy
# face with logit 19.4 is off by 0.019 on CoreML fp16 while every logit under 6 stays within 0.005).
# Quantized rungs have no logit limit: their gate is the AUC drift on a validation split, plus this mask agreement.
# bf16 keeps 8 mantissa bits to fp16's 11: OpenVINO's bfloat16 inference on the toy detector was 0.075 off on 16 toy
# crops (masks identical); the limit keeps twice that and the gate judges the rest
PARITY = {"fp32": {"max_logit_error": 1e-4, "mask_agreement": 1.0}, "fp16": {"max_logit_error": 1e-2, "mask_agreement": 0.99},
          "bf16": {"max_logit_error": 0.15, "mask_agreement": 0.99}}
QUANTIZED_PARITY = {"max_logit_error": None, "mask_agreement": 0.99}


def parity_limits(precision: str) -> dict:
    return PARITY.get(precision, QUANTIZED_PARITY)


class ParityError(RuntimeError):
    """The exported graph does not compute what the torch reference computes."""


class GateError(RuntimeError):
    """A compressed artifact decides differently from the reference beyond its budget: it is not shipped."""


@dataclass
class Parity:
    max_abs_logit: float
    max_logit_error: float  # |Δlogit| / max(1, |logit|), what the limits apply to (PARITY)
    mean_abs_logit: float
    mask_agreement: float
    masks_identical: bool
    samples: int
    ok: bool
    thresholds: dict = field(default_factory=dict)
    vote_agreement: float | None = None  # ensemble head: the graph's vote against the rule applied to its own streams


def vote_agrees(out: dict, weights, step: float) -> bool | None:
    """Whether a graph's `probability` is the discretized vote of its own `streams` output (None: too close to a
    rounding boundary to tell: a stream level within 1 % of a step from a half, where float32 and float16 graphs
    may round either way). Streams that found no region do not vote; which ones did is not an output, so a graph
    agrees when some subset of the streams that includes the global one gives its vote."""
    from ..models.pooling import discretized_vote

    p = np.asarray(out["streams"], np.float64).reshape(-1)
    n = round(1.0 / step)
    if (np.abs(p * n - np.floor(p * n) - 0.5) < 1e-2).any():
        return None
    votes = {float(discretized_vote(np.where(np.array(keep, bool), p, np.nan)[None], weights, step)[0])
             for keep in np.ndindex(*(2,) * len(p)) if keep[-1]}
    # (a float16 graph returns the vote as float16: 0.6 comes back as 0.60009766)
    return any(abs(float(np.asarray(out["probability"]).reshape(-1)[0]) - v) < step / 100 for v in votes)


def reference_outputs(reference: Runner, images: np.ndarray) -> list[dict]:
    """The torch reference's outputs on each crop, computed before a runtime is open (its activations and the
    runtime's weights are then never in memory together): check_parity's `reference`."""
    return [{k: np.array(v) for k, v in reference(image[None]).items()} for image in images]


def check_parity(reference: Runner | list, runner: Runner, images: np.ndarray, precision: str, vote: tuple | None = None,
                 selects: bool = False) -> Parity:
    """Run `runner` and the torch `reference` (or its `reference_outputs` on them) on the same crops [N, 3, S, S]
    float32, one at a time (the graphs have batch 1). `vote` = (weights, step) for the ensemble head: every graph's probability must be the
    discretized vote of its own streams. `selects`: the head's token mask is a selection by feature values
    (models/heads.Head.selects), held to its limit in fp32 only."""
    dl, err, agree, identical, votes = [], [], [], True, []
    for i, image in enumerate(images):
        ref = reference[i] if isinstance(reference, list) else reference(image[None])
        out = runner(image[None])
        if vote is not None:
            votes.append(vote_agrees(out, *vote))
        ref_logit = np.asarray(ref["logit"], np.float64).reshape(-1)
        diff = np.abs(np.asarray(out["logit"], np.float64).reshape(-1) - ref_logit)
        dl.append(float(diff.max()))
        err.append(float((diff / np.maximum(1.0, np.abs(ref_logit))).max()))
        mask_ref, mask_out = np.asarray(ref["token_mask"]) > 0.5, np.asarray(out["token_mask"]) > 0.5
        agree.append(float((mask_ref == mask_out).mean()))
        identical &= bool((mask_ref == mask_out).all())
    limits = dict(parity_limits(precision))
    if selects and precision != "fp32":
        limits["mask_agreement"] = None
    max_err, agreement = max(err), float(np.mean(agree))
    ok = ((limits["max_logit_error"] is None or max_err <= limits["max_logit_error"])
          and (limits["mask_agreement"] is None or agreement >= limits["mask_agreement"]))
    decided = [v for v in votes if v is not None]
    vote_agreement = float(np.mean(decided)) if decided else None
    ok = ok and vote_agreement in (None, 1.0)
    return Parity(max(dl), max_err, float(np.mean(dl)), agreement, identical, len(images), ok, dict(limits), vote_agreement)


def parity_message(name: str, parity: Parity) -> str:
    vote = "" if parity.vote_agreement is None else f", vote agreement {parity.vote_agreement:.3f} (limit 1)"
    return (f"{name}: logit error {parity.max_logit_error:.2e} (max |dlogit| {parity.max_abs_logit:.2e}), mask "
            f"agreement {parity.mask_agreement:.4f}{vote} (limits {parity.thresholds})")


# Images per batch of the torch reference: batching amortises each call's overhead where a face costs a few GFLOPs
# (toy: 3.7, batch 8), and buys nothing where the GEMMs are already large while the activations grow with the batch
# (full size, 1044 GFLOPs: a batch of 8 held 5.2 GB of activations in FaRL's UPerHead, the build's peak; batch 1).
REFERENCE_BATCH_GFLOPS = 64.0
MAX_REFERENCE_BATCH = 8


def reference_batch(gflops_per_image: float) -> int:
    """How many images the torch reference scores at once: as many as fit REFERENCE_BATCH_GFLOPS, 1 to 8."""
    return max(1, min(MAX_REFERENCE_BATCH, int(REFERENCE_BATCH_GFLOPS // max(gflops_per_image, 1e-9))))


@dataclass
class Validation:
    """The validation split and the reference's scores on it (computed once per build)."""

    data: LabelledSet
    reference: Scores

    @classmethod
    def build(cls, reference: Runner, threshold: float, data: LabelledSet, name: str | None = None, engine=score_set,
              recipe=None, batch: int = 8) -> Validation:
        """Score `data` with the reference runner (or `engine` with its `recipe`: eval.scores), `batch` images at a
        time (reference_batch). Fails at once (ValueError naming the split, `name` or its description) when the gate
        could not compute its AUC statistics on the faces with a region: before anything is converted."""
        ref = engine(reference, data, batch=batch, recipe=recipe)
        ref.header.update(threshold=float(threshold), model="torch fp32", data=data.description)
        try:
            delong_auc_variance(ref.labels[ref.scored], ref.logits[ref.scored])
        except ValueError as e:
            raise ValueError(f"{name or data.description}: cannot gate on this split: {e} among the faces with a "
                             "region") from e
        return cls(data, ref)

    def items(self) -> list[tuple[np.ndarray, int]]:
        """(image [1, 3, S, S] float32, label) of the samples the gate's AUC is computed on: those the reference
        finds the region in."""
        return [(self.data[i].image.transpose(2, 0, 1)[None].astype(np.float32), int(self.data[i].label))
                for i in np.flatnonzero(self.reference.scored)]


@dataclass(frozen=True)
class Gate:
    """AUC drift and token-mask agreement of a runner against the reference on the validation split."""

    validation: Validation
    budget: Budget
    min_mask_agreement: float | None = 0.99  # None: reported, not limited (a head whose mask is a selection)
    pack_crops: int = 0  # crops of the split each bundle carries with their reference scores (0: no pack)
    engine: object = score_set  # who scores the split (eval.scores.score_set or a dfedge.distributed.RayEngine)

    def pack(self) -> dict[str, np.ndarray] | None:
        """The bundle's validation pack: up to `pack_crops` crops of the split that the reference finds the region
        in, as many fakes as reals where the split allows (the first of each, in split order), with their labels and
        the reference's logits and token masks; `bench.py --validate` scores them on a device (device/validation.validate)."""
        if not self.pack_crops:
            return None
        ref = self.validation.reference
        scored = np.flatnonzero(ref.scored)
        fakes, reals = scored[ref.labels[scored] == 1], scored[ref.labels[scored] == 0]
        n = self.pack_crops
        n_fake = min(len(fakes), max(n // 2, n - len(reals)))
        chosen = np.sort(np.concatenate([fakes[:n_fake], reals[:min(len(reals), n - n_fake)]]))
        return {"images": np.stack([self.validation.data[int(i)].image for i in chosen]).astype(np.uint8),
                "labels": ref.labels[chosen].astype(np.int8), "logits": ref.logits[chosen].astype(np.float32),
                "token_masks": ref.token_masks[chosen].astype(bool), "ids": ref.ids[chosen].astype(str),
                "threshold": np.float64(ref.threshold)}  # the reference's decisions are at its own threshold

    def __call__(self, runner: Runner, recipe=None) -> dict:
        """The gate's record (for the manifest); raises GateError with every reason when the runner fails it.
        `recipe`: how the engine's workers open the same runner (runtimes.recipe.Recipe), for an engine that fans out."""
        art = self.engine(runner, self.validation.data, recipe=recipe)
        art.header.update(threshold=self.validation.reference.threshold)
        comp = compare(self.validation.reference, art, self.budget)
        reasons = list(comp.reasons)
        if self.min_mask_agreement is not None and comp.masks.token_agreement < self.min_mask_agreement:
            reasons.append(f"token-mask agreement {comp.masks.token_agreement:.4f} < {self.min_mask_agreement}")
        record = {"data": self.validation.data.description, "reference_auc": comp.reference.auc, "auc": comp.artifact.auc,
                  "delta_auc": comp.delta_auc, "delta_auc_ci": list(comp.delta_auc_ci), "delong_p": comp.delong.p_value,
                  "mask_agreement": comp.masks.token_agreement, "flip_rate": comp.agreement.flip_rate,
                  "max_abs_logit": comp.agreement.max_abs, "mean_abs_logit": comp.agreement.mean_abs,
                  "budget": {"max_auc_drop": self.budget.max_auc_drop, "min_mask_agreement": self.min_mask_agreement},
                  "passed": not reasons, "reasons": reasons}
        if reasons:
            raise GateError("; ".join(reasons))
        return record


# The face front end in a bundle against the kit's torch front end on the same photos: the same faces, landmarks
# within half a pixel, aligned crops within one grey level (mean absolute difference).
FRONT_END_PARITY = {"max_landmark_error_px": 0.5, "max_crop_mad": 1.0}


def check_front_end_parity(reference: FaceDetector, detector: FaceDetector, photos: list, template: np.ndarray,
                           crop_size: int) -> dict:
    """Faces found by both face detectors on `photos`, matched by box overlap, compared: the record the manifest
    keeps, with `ok` against FRONT_END_PARITY."""
    faces, landmark_error, mad, same = 0, 0.0, 0.0, True
    for photo in photos:
        ref, got = reference.detect(photo), detector.detect(photo)
        same &= len(ref) == len(got)
        for r in ref:
            match = max(got, key=lambda g: iou(g.box, r.box), default=None)
            if match is None or iou(match.box, r.box) < 0.9:
                same = False
                continue
            faces += 1
            landmark_error = max(landmark_error, float(np.abs(match.landmarks - r.landmarks).max()))
            a, b = (align(photo, f.landmarks, template, crop_size).astype(np.float64) for f in (r, match))
            mad = max(mad, float(np.abs(a - b).mean()))
    ok = same and faces > 0 and landmark_error <= FRONT_END_PARITY["max_landmark_error_px"] \
        and mad <= FRONT_END_PARITY["max_crop_mad"]
    return {"reference": "the kit's torch front end", "photos": len(photos), "faces": faces, "same_faces": bool(same),
            "max_landmark_error_px": landmark_error, "max_crop_mad": mad, "limits": dict(FRONT_END_PARITY), "ok": bool(ok)}
