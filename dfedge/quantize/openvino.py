"""OpenVINO rungs through NNCF: static INT8 (SmoothQuant, transformer preset), INT8/INT4 weight-only, and
`mixed` (the mask path weight-only INT8, the rest INT8 with ops reverted to float by accuracy control on the AUC)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..eval.gate import GateError
from ..models.writing import temporary
from ..export import openvino as ov_export
from ..export.job import Job
from .scope import openvino_patterns

INT4_GROUP = 32
# The region index's input: these submodules reach the score only through the token-membership threshold (mean
# region probability >= 1/4 per token), a step. INT8 activation noise there moves whole tokens in or out of the
# region, and one moved token moves the region mean (toy: |dlogit| up to 19): per-op accuracy control cannot undo
# that one op at a time (docs/quantize.md, "Accuracy control"). The mixed rung keeps their activations float and
# compresses their weights to INT8 (weight-only), then lets accuracy control rank and revert the rest.
MASK_PATH_SUBMODULES = ("parser",)
WEIGHTED_TYPES = ("MatMul", "Convolution", "ConvolutionBackpropData", "GroupConvolution", "Gather")
# NNCF measures its drop from the model it was given (FP32 OpenVINO, the mask path's weights INT8), the gate from
# torch FP32: NNCF's target sits inside the gate's budget so that the weight-only part and that baseline fit in it.
TARGET_FRACTION = 0.8
RANKING_SUBSET_SIZE = 10  # items NNCF ranks quantizers on (the whole split when it is smaller)


@dataclass
class AccuracyControl:
    """What the mixed rung's accuracy control needs: NNCF's target and bounds, and the gate's own baseline."""

    items: list  # (image [1, 3, H, W], label) of the samples the gate's AUC is computed on
    validation_fn: Callable  # (compiled_model, items) -> (AUC, per-item outputs): see auc_validation
    max_drop: float  # NNCF's target: absolute AUC drop
    max_iterations: int
    reference_auc: float  # the gate's baseline: torch FP32 on the same items
    budget: float  # the gate's largest AUC drop; no model NNCF validated within it -> refused before bundling
    ranking_subset_size: int = RANKING_SUBSET_SIZE
    num_ranking_workers: int = 1
    weight_only: tuple[str, ...] = MASK_PATH_SUBMODULES

    @classmethod
    def from_job(cls, job: Job) -> AccuracyControl:
        """Accuracy control on the job's gate: its validation items, its baseline (the reference's AUC on them)
        and its budget, of which NNCF aims at TARGET_FRACTION."""
        from sklearn.metrics import roc_auc_score

        if job.gate is None:
            raise ValueError("the mixed rung needs a validation split (--val / --data) for accuracy control")
        ref, budget = job.gate.validation.reference, job.gate.budget.max_auc_drop
        return cls(job.gate.validation.items(), auc_validation(), max(0.0, TARGET_FRACTION * budget),
                   job.accuracy_iterations, float(roc_auc_score(ref.labels[ref.scored], ref.logits[ref.scored])),
                   budget)


def ignored_scope():
    import nncf

    return nncf.IgnoredScope(patterns=openvino_patterns(), validate=False)


def quantized_ops(model) -> set[str]:
    """Names of the ops that consume a FakeQuantize output (what runs in INT8)."""
    names = set()
    for node in model.get_ordered_ops():
        if node.get_type_name() == "FakeQuantize":
            names |= {t.get_node().get_friendly_name() for t in node.output(0).get_target_inputs()}
    return names


def quantize(job: Job, out_dir: Path, report: dict) -> list[Path]:
    """What was done is written into `report` (tool, settings; for `mixed`: weight-only and reverted ops, the AUC of
    each model accuracy control validated)."""
    import nncf

    precision, calib = job.precision, job.calibration
    model = ov_export.converted(job)
    static = precision in ("int8", "mixed")
    data = nncf.Dataset(calib.items()) if static else None
    common = dict(model_type=nncf.ModelType.TRANSFORMER, ignored_scope=ignored_scope(),
                  subset_size=len(calib.images) if static else None)
    if precision == "int8":
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

        # 7-bit weights everywhere (NNCF's default fixes the first layer only): CPUs without VNNI sum u8 x s8 pairs into
        # saturating 16-bit lanes; measured with oneDNN held to AVX2 (benchmarks/isa_int8.py): -1.62 pp by default,
        # +0.04 pp with the fix, the same +0.04 pp with VNNI
        model = nncf.quantize(model, data, **common,
                              advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE))
        report.update(tool=f"nncf {nncf.__version__} quantize",
                      settings={"model_type": "TRANSFORMER", "preset": "performance", "overflow_fix": "enable"})
    elif precision == "int8-weights":
        model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=ignored_scope())
        report.update(tool=f"nncf {nncf.__version__} compress_weights", settings={"mode": "INT8_ASYM"})
    elif precision == "int4-weights":
        from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

        # layers whose input width the group does not divide (e.g. the 14-wide pooling matrices) stay INT8
        model = nncf.compress_weights(
            model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=INT4_GROUP, ratio=1.0, ignored_scope=ignored_scope(),
            advanced_parameters=AdvancedCompressionParameters(group_size_fallback_mode=GroupSizeFallbackMode.IGNORE))
        report.update(tool=f"nncf {nncf.__version__} compress_weights",
                      settings={"mode": "INT4_SYM", "group_size": INT4_GROUP, "ratio": 1.0, "backup": "INT8_ASYM",
                                "group_size_fallback": "IGNORE (those layers stay INT8)"})
    elif precision == "mixed":
        model = mixed(model, data, AccuracyControl.from_job(job), report, common)
    else:
        raise ValueError(f"openvino has no quantized rung '{precision}'")
    report["calibration"] = calib.record() if static else None
    return ov_export.save(model, out_dir, job.metadata)


def module_ops(model, modules) -> set[str]:
    """Names of the ops of `modules`: those converted under their name ("__module.<path>/…") plus every op enclosed
    between two of them. Conversion fuses a convolution with its BatchNorm into a node named after the BatchNorm's
    unnamed Multiply ("Multiply_n433"), so a name pattern alone misses it; the enclosure does not."""
    patterns = [re.compile(rf"^__module\.{re.escape(m)}(\.|/)") for m in modules]
    ops = model.get_ordered_ops()
    named = [n for n in ops if any(p.match(n.get_friendly_name()) for p in patterns)]

    def reach(forward: bool) -> set[str]:
        seen, todo = set(), list(named)
        while todo:
            node = todo.pop()
            nexts = ([t.get_node() for o in node.outputs() for t in o.get_target_inputs()] if forward
                     else [i.get_source_output().get_node() for i in node.inputs()])
            for n in nexts:
                if n.get_friendly_name() not in seen:
                    seen.add(n.get_friendly_name())
                    todo.append(n)
        return seen

    return {n.get_friendly_name() for n in named} | (reach(True) & reach(False))


def weight_compressed_ops(model) -> set[str]:
    """Names of the weighted ops whose weights are stored as 8/4-bit integer constants (weight-only compression)."""
    import openvino as ov

    low = {ov.Type.i8, ov.Type.u8, ov.Type.i4, ov.Type.u4}
    names = set()
    for const in model.get_ordered_ops():
        if const.get_type_name() != "Constant" or const.get_element_type() not in low:
            continue
        todo = [const]
        while todo:  # through the decompression subgraph (Convert, Subtract, Multiply, Reshape) to the weighted op
            for target in todo.pop().output(0).get_target_inputs():
                node = target.get_node()
                if node.get_type_name() in WEIGHTED_TYPES:
                    names.add(node.get_friendly_name())
                elif node.get_type_name() in ("Convert", "Subtract", "Multiply", "Reshape", "Transpose"):
                    todo.append(node)
    return names


def mixed(model, data, accuracy: AccuracyControl, report: dict, common: dict):
    """Weight-only INT8 on the mask path, then quantize_with_accuracy_control on the AUC for everything else. Raises
    GateError at once when no model NNCF validated is within the gate's budget (the one it returns is among them)."""
    import tempfile

    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    mask_path = module_ops(model, accuracy.weight_only)
    if mask_path:  # every weighted op outside the mask path is ignored by this compression; the region math too
        others = [n.get_friendly_name() for n in model.get_ordered_ops() if n.get_type_name() in WEIGHTED_TYPES
                  and n.get_friendly_name() not in mask_path]
        model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=nncf.IgnoredScope(
            names=others, patterns=openvino_patterns(), validate=False))
    weight_only = sorted(weight_compressed_ops(model))

    validated = []  # AUC of every model NNCF validates on the whole split, in order: initial, quantized, then each step

    def recording(compiled_model, items):
        auc, values = accuracy.validation_fn(compiled_model, items)
        if len(values) == len(accuracy.items):
            validated.append(auc)
        return auc, values

    restorer = AdvancedAccuracyRestorerParameters(
        max_num_iterations=accuracy.max_iterations, num_ranking_workers=accuracy.num_ranking_workers,
        ranking_subset_size=min(len(accuracy.items), accuracy.ranking_subset_size))
    scope = nncf.IgnoredScope(names=sorted(mask_path), patterns=openvino_patterns(), validate=False)
    with tempfile.TemporaryDirectory() as tmp, temporary(tmp):  # NNCF saves its fully quantized model there: what was reverted
        restorer.intermediate_model_dir = tmp
        result = nncf.quantize_with_accuracy_control(
            model, data, nncf.Dataset(accuracy.items, lambda item: item[0]), validation_fn=recording,
            max_drop=accuracy.max_drop, drop_type=nncf.DropType.ABSOLUTE,
            advanced_accuracy_restorer_parameters=restorer, **dict(common, ignored_scope=scope))
        full_int8 = quantized_ops(ov.Core().read_model(str(Path(tmp) / "intermediate_model.xml")))
        key = ["nncf", "quantization", "advanced_accuracy_restorer_parameters"]
        if result.has_rt_info(key):  # NNCF records its settings in the IR; a temporary path would vary per export
            result.set_rt_info(result.get_rt_info(key).astype(str).replace(repr(tmp), "None"), key)
    reverted = sorted(full_int8 - quantized_ops(result))
    drops = [accuracy.reference_auc - auc for auc in validated[1:]]
    report.update(
        tool=f"nncf {nncf.__version__} compress_weights + quantize_with_accuracy_control",
        settings={"model_type": "TRANSFORMER", "max_drop_auc": accuracy.max_drop, "drop_type": "ABSOLUTE",
                  "max_iterations": accuracy.max_iterations, "ranking_subset_size": restorer.ranking_subset_size,
                  "num_ranking_workers": accuracy.num_ranking_workers, "validation_items": len(accuracy.items),
                  "ranking": "NMSE of the model outputs (validation_fn returns them per item)",
                  "weight_only_int8": {"submodules": list(accuracy.weight_only), "mode": "INT8_ASYM",
                                       "activations": "float"}},
        weight_only_int8=weight_only, quantized_int8=len(full_int8), reverted_to_float=reverted,
        accuracy={"reference_auc": accuracy.reference_auc, "validated_auc": validated})
    if not drops or min(drops) > accuracy.budget:
        best = min(drops) * 100 if drops else float("nan")
        raise GateError(f"accuracy control: no model it validated is within the budget (best AUC drop {best:.2f} pp "
                        f"> {accuracy.budget * 100:.2f} pp; {len(reverted)} of {len(full_int8)} ops reverted, "
                        f"{max(len(drops) - 1, 0)} of {accuracy.max_iterations} iterations)")
    return result


def auc_validation():
    """validation_fn for accuracy control: (frame-level AUC of the logits, every output per item) on (image, label)
    items. The per-item outputs make NNCF rank quantizers by the NMSE of the outputs on the items it moves most; a
    bare AUC would make it compute a one-item AUC per sample (undefined) and rank on that."""
    from sklearn.metrics import roc_auc_score

    def validate(compiled_model, validation_data):
        logit = compiled_model.output("logit")
        scores, labels, outputs = [], [], []
        for image, label in validation_data:
            result = compiled_model(image)
            scores.append(float(np.asarray(result[logit]).reshape(-1)[0]))
            labels.append(label)
            outputs.append([result[o] for o in compiled_model.outputs])
        auc = float(roc_auc_score(labels, scores)) if len(set(labels)) > 1 else float("nan")
        return auc, outputs

    return validate
