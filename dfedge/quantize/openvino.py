"""OpenVINO rungs through NNCF: static INT8 (SmoothQuant, transformer preset), INT8/INT4 weight-only, and
`mixed` (INT8 with ops reverted to float by accuracy control on the AUC)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..export import openvino as ov_export
from .calibration import Calibration
from .scope import openvino_patterns

INT4_GROUP = 32


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


def quantize(detector, example, out_dir: Path, precision: str, metadata: dict, cache: dict | None,
             calib: Calibration, report: dict, accuracy=None) -> list[Path]:
    """`accuracy`: (validation items, validation_fn(compiled_model, items) -> AUC, max_drop, max_iterations) for
    the `mixed` rung. What was done is written into `report` (tool, settings, reverted ops)."""
    import nncf

    model = ov_export.converted(detector, example, cache)
    data = nncf.Dataset(calib.items())
    common = dict(model_type=nncf.ModelType.TRANSFORMER, ignored_scope=ignored_scope(), subset_size=len(calib.images))
    if precision == "int8":
        model = nncf.quantize(model, data, **common)
        report.update(tool=f"nncf {nncf.__version__} quantize", settings={"model_type": "TRANSFORMER", "preset": "performance"})
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
        from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

        if accuracy is None:
            raise ValueError("the mixed rung needs a validation split (--val) for accuracy control")
        items, validate_fn, max_drop, iterations = accuracy
        full_int8 = quantized_ops(nncf.quantize(ov_export.converted(detector, example, cache), data, **common))
        model = nncf.quantize_with_accuracy_control(
            model, data, nncf.Dataset(items, lambda item: item[0]), validation_fn=validate_fn, max_drop=max_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                max_num_iterations=iterations, ranking_subset_size=min(len(items), 50)),
            **common)
        report.update(tool=f"nncf {nncf.__version__} quantize_with_accuracy_control",
                      settings={"model_type": "TRANSFORMER", "max_drop_auc": max_drop, "max_iterations": iterations,
                                "validation_items": len(items)},
                      reverted_to_float=sorted(full_int8 - quantized_ops(model)))
    else:
        raise ValueError(f"openvino has no quantized rung '{precision}'")
    report["calibration"] = calib.record() if precision in ("int8", "mixed") else None
    return ov_export.save(model, out_dir, metadata)


def auc_validation():
    """validation_fn for accuracy control: frame-level AUC of the compiled model's logits on (image, label) items."""
    from sklearn.metrics import roc_auc_score

    def validate(compiled_model, validation_data) -> float:
        logit = compiled_model.output("logit")
        scores, labels = [], []
        for image, label in validation_data:
            scores.append(float(np.asarray(compiled_model(image)[logit]).reshape(-1)[0]))
            labels.append(label)
        return float(roc_auc_score(labels, scores))

    return validate
