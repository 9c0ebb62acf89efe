"""Run one quantized rung end to end: quantize -> bundle -> parity -> AUC-drift gate on a validation split."""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

import numpy as np

from ..eval.scores import Scores, score_set, torch_runner
from ..eval.validate import Budget, compare
from ..export.bundle import GateError, write_bundle
from .calibration import Calibration


@dataclass
class Validation:
    """The validation split and the torch FP32 reference's scores on it (computed once per command)."""

    data: object  # LabelledSet
    reference: Scores

    @classmethod
    def build(cls, detector, data, name: str | None = None) -> "Validation":
        """Fails at once (ValueError naming the split, `name` or its description) when the gate could not compute
        its AUC statistics on the faces with a region: before anything is converted."""
        from ..eval.metrics import delong_auc_variance

        ref = score_set(torch_runner(detector), data, batch=8)
        ref.header.update(threshold=float(detector.probe.info.threshold), model="torch fp32", data=data.description)
        try:
            delong_auc_variance(ref.labels[ref.scored], ref.logits[ref.scored])
        except ValueError as e:
            raise ValueError(f"{name or data.description}: cannot gate on this split: {e} among the faces with a "
                             "region") from e
        return cls(data, ref)

    def items(self) -> list[tuple[np.ndarray, int]]:
        """(image, label) of the samples the gate's AUC is computed on: those the reference finds the region in."""
        return [(self.data[i].image.transpose(2, 0, 1)[None].astype(np.float32), int(self.data[i].label))
                for i in np.flatnonzero(self.reference.scored)]


def gate(validation: Validation, budget: Budget, min_mask_agreement: float, runner) -> dict:
    art = score_set(runner, validation.data)
    art.header.update(threshold=validation.reference.threshold)
    comp = compare(validation.reference, art, budget)
    reasons = list(comp.reasons)
    if comp.masks.token_agreement < min_mask_agreement:
        reasons.append(f"token-mask agreement {comp.masks.token_agreement:.4f} < {min_mask_agreement}")
    result = {"data": validation.data.description, "reference_auc": comp.reference.auc, "auc": comp.artifact.auc,
              "delta_auc": comp.delta_auc, "delta_auc_ci": list(comp.delta_auc_ci), "delong_p": comp.delong.p_value,
              "mask_agreement": comp.masks.token_agreement, "flip_rate": comp.agreement.flip_rate,
              "max_abs_logit": comp.agreement.max_abs, "mean_abs_logit": comp.agreement.mean_abs,
              "budget": {"max_auc_drop": budget.max_auc_drop, "min_mask_agreement": min_mask_agreement},
              "passed": not reasons, "reasons": reasons}
    if reasons:
        raise GateError("; ".join(reasons))
    return result


def write_rung(detector, target, precision: str, dist, name: str, sources: dict, options: dict, parity_images,
               calib: Calibration, validation: Validation, budget: Budget, min_mask_agreement: float = 0.99,
               accuracy_iterations: int = 3, log=lambda m: None, cache: dict | None = None, folder: str | None = None,
               ranking_subset_size: int = 10, target_fraction: float = 0.8):
    """`ranking_subset_size`, `target_fraction` (NNCF's target drop as a fraction of the gate's budget): the mixed
    rung's accuracy control."""
    module = importlib.import_module(f"dfedge.quantize.{target.module}")
    report: dict = {}
    accuracy = None
    if precision == "mixed":
        from sklearn.metrics import roc_auc_score

        items = validation.items()
        ref = validation.reference
        # NNCF measures its drop from the model it was given (FP32 OpenVINO, the mask path's weights INT8), the gate
        # from torch FP32: the target sits inside the budget so that the weight-only part and that baseline fit in it
        accuracy = module.AccuracyControl(
            items, module.auc_validation(), target_fraction * budget.max_auc_drop, accuracy_iterations,
            reference_auc=float(roc_auc_score(ref.labels[ref.scored], ref.logits[ref.scored])),
            budget=budget.max_auc_drop, ranking_subset_size=ranking_subset_size)
    export_fn = functools.partial(module.quantize, calib=calib, report=report, accuracy=accuracy)
    opts = dict(options, quantization=report)  # filled in by the quantizer before the manifest is written
    try:
        return write_bundle(detector, target, precision, dist, name, sources, opts, parity_images, log=log, cache=cache,
                            export_fn=export_fn, gate=functools.partial(gate, validation, budget, min_mask_agreement),
                            folder=folder)
    except GateError as e:
        e.quantization = report  # what the quantizer did (accuracy control's record), for the report of a refused rung
        raise


@dataclass
class RungResult:
    target: str
    precision: str
    status: str  # ok | gate (❎: refused by the gate, not shipped) | error (❌: the tool failed)
    reason: str = ""
    size_mb: float | None = None
    parity: dict | None = None
    gate: dict | None = None
    p50_ms: float | None = None
    tool: str = ""
    quantization: dict | None = None  # the manifest's export_options.quantization (accuracy control's record)

    def row(self) -> tuple[str, ...]:
        mark = {"ok": "✅", "gate": "❎", "error": "❌"}[self.status]
        g = self.gate or {}
        return (self.target, self.precision, f"{mark} {self.reason}".strip(),
                _fmt(self.size_mb, ".2f"), _fmt(g.get("max_abs_logit"), ".2e"), _fmt(g.get("mean_abs_logit"), ".2e"),
                _fmt(g.get("mask_agreement"), ".4f"), _fmt(g.get("auc"), ".4f"),
                _fmt(None if "delta_auc" not in g else g["delta_auc"] * 100, "+.2f"), _fmt(self.p50_ms, ".1f"), self.tool)


    def accuracy_lines(self) -> list[str]:
        """What accuracy control did, for a mixed rung: the AUC of each model NNCF validated and the reverted ops."""
        q = self.quantization or {}
        if "reverted_to_float" not in q:
            return []
        aucs = q["accuracy"]["validated_auc"]
        steps = ["initial (FP32, mask-path weights INT8)", "fully quantized"] + [f"after step {i}" for i in range(1, len(aucs) - 1)]
        reverted = q["reverted_to_float"]
        lines = [f"{self.target} {self.precision}: torch FP32 AUC {q['accuracy']['reference_auc']:.4f}; NNCF validated "
                 + ", ".join(f"{step} {auc:.4f}" for step, auc in zip(steps, aucs))
                 + f". Reverted to float: {len(reverted)} of {q['quantized_int8']} INT8 ops"
                 + (":" if reverted else " (the fully quantized model was within NNCF's target).")]
        return lines + [f"  - `{op}`" for op in reverted]


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def median_latency_ms(runner, image: np.ndarray, runs: int = 5) -> float:
    import time

    runner(image)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner(image)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def run_ladder(spec, rungs, dist, name: str, calib_spec: str, calib_size: int, val_spec: str, max_auc_drop: float,
               min_mask_agreement: float, accuracy_iterations: int, log=lambda m: None) -> list[RungResult]:
    from pathlib import Path

    from ..data.sources import open_set
    from ..export.bundle import toy_crops, weight_sources
    from ..models.factory import build_detector
    from .calibration import calibration_set

    det = build_detector(spec)
    sources = weight_sources(spec)
    parity_images = toy_crops(2)
    log(f"calibration: {calib_spec} ({calib_size}); validation reference on {val_spec}")
    calib = calibration_set(calib_spec, calib_size, spec.region)
    validation = Validation.build(det, open_set(val_spec, spec.region), val_spec)
    budget = Budget(max_auc_drop)
    options = {"preset": spec.preset, "region": spec.region, "validation": val_spec}
    results, caches = [], {}
    for target, precision in rungs:
        cache = caches.setdefault(target.name, {})
        log(f"{target.name}-{precision}: quantizing")
        try:
            path, manifest = write_rung(det, target, precision, dist, name, sources, options, parity_images, calib,
                                        validation, budget, min_mask_agreement, accuracy_iterations, log, cache)
        except GateError as e:
            results.append(RungResult(target.name, precision, "gate", str(e), quantization=getattr(e, "quantization", None)))
            continue
        except Exception as e:  # noqa: BLE001 - a failing rung never stops the ladder; it is reported
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            results.append(RungResult(target.name, precision, "error", f"{type(e).__name__}: {text}"))
            continue
        runner = target.exporter().load(path)
        results.append(RungResult(
            target.name, precision, "ok", size_mb=sum(f["bytes"] for f in manifest["files"].values()) / 1e6,
            parity=manifest["parity"], gate=manifest["gate"], p50_ms=median_latency_ms(runner, parity_images[:1]),
            tool=manifest["export_options"]["quantization"].get("tool", ""),
            quantization=manifest["export_options"]["quantization"]))
    write_report(Path(dist) / name / "quantize-report.md", results, val_spec, budget, min_mask_agreement, calib.record())
    return results


def write_report(path, results: list[RungResult], val_spec: str, budget: Budget, min_mask: float, calib: dict) -> None:
    from ..models.checkpoint import atomic_write

    head = ["target", "precision", "status", "size MB", "max abs Δlogit", "mean abs Δlogit", "mask agreement", "AUC",
            "ΔAUC pp", "p50 ms", "tool"]
    lines = ["# Quantization ladder", "",
             f"Gate: ΔAUC ≥ -{budget.max_auc_drop * 100:.2f} pp and token-mask agreement ≥ {min_mask} against torch "
             f"FP32 on `{val_spec}`; calibration: {calib['data']} ({calib['size']} crops, sha256 {calib['sha256'][:12]}…). "
             "✅ shipped · ❎ refused by the gate (not shipped) · ❌ the tool failed. Δlogit: against torch FP32 on "
             "the validation split; p50: one crop on this host.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r.row()) + " |" for r in results]
    control = [line for r in results for line in r.accuracy_lines()]
    if control:
        lines += ["", "## Accuracy control", "", *control, "",
                  "A shipped rung's manifest holds the same record: `export_options.quantization`."]
    atomic_write(path, lambda t: t.write_text("\n".join(lines) + "\n"))
