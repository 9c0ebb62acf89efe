"""The bundle manifest's schema: the one description of what a bundle records (JSON Schema, the subset
`schema_errors` reads). Every key the kit writes or a device reads is declared here, with `additionalProperties:
false` at every level the kit owns; the records of outside tools (a converter's settings, a head's config, a
runtime's options) are objects whose content is theirs. docs/manifest.schema.json is its generated copy.

Schema 2 (this one) ships the device package (`code`); schema 1 bundles (bench.py + frontend.py) are read by
`manifest.upgrade` after `SCHEMA_V1`, the subset they were written against, accepts them."""

from __future__ import annotations

import math
import re

from .errors import shown
from .graphs import OUTPUTS as OUTPUT_NAMES

BUNDLE_SCHEMA = "dfedge-bundle/2"
BUNDLE_SCHEMA_V1 = "dfedge-bundle/1"

STR, INT, NUM, BOOL, NULL = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}
FREE = {"type": "object"}  # an outside tool's own record: its keys are its own


def obj(properties: dict, required: tuple = (), extra=False) -> dict:
    """An object the kit owns: these properties, these required, nothing else (unless `extra` says what may be)."""
    return {"type": "object", "required": list(required), "additionalProperties": extra, "properties": properties}


def arr(items: dict, n: int | None = None, least: int = 0) -> dict:
    out = {"type": "array", "items": items, "minItems": n if n is not None else least}
    return dict(out, maxItems=n) if n is not None else out


def nullable(schema: dict) -> dict:
    return {"anyOf": [schema, NULL]}


SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
FILE_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]*$"}
REL_PATH = "^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$"
POINT = arr(NUM, 2)
RANGE = arr(NUM, 2)
FILE = obj({"sha256": SHA256, "bytes": {"type": "integer", "minimum": 0}}, ("sha256", "bytes"))
SOURCE = obj({"file": nullable(STR), "sha256": nullable(SHA256), "note": STR}, ("file", "sha256"))
GUARD = obj({"tokens": RANGE, "row": RANGE, "col": RANGE, "coverage": NUM, "faces": INT, "fitted_on": nullable(STR),
             "margin": obj({"tokens": NUM, "row": NUM, "col": NUM})}, ("tokens", "row", "col"))
PLACEMENT = {"anyOf": [
    obj({"runtime": STR, "accelerator": STR, "fallback": STR, "ops": obj({"accelerated": INT, "fallback": INT, "total": INT}),
         "gflops": obj({"accelerated": NUM, "fallback": NUM}), "accelerated_flop_share": nullable(NUM),
         "fallback_ops": {"type": "object", "additionalProperties": INT},
         "gemm_gflops_by_dtype": obj({"accelerated": {"type": "object", "additionalProperties": NUM},
                                      "fallback": {"type": "object", "additionalProperties": NUM}}),
         "options": FREE, "cpu": STR, "isa": arr(STR),
         "quantize_steps": obj({"accelerated": INT, "fallback": INT})},
        ("runtime", "ops")),
    obj({"runtime": STR, "observed": {"const": False}, "reason": STR}, ("runtime", "observed", "reason")),
    NULL]}
VALIDATION = obj({"data": STR, "reference_auc": NUM, "auc": NUM, "delta_auc": NUM, "delta_auc_ci": arr(NUM, 2),
                  "delong_p": nullable(NUM), "mask_agreement": nullable(NUM), "flip_rate": NUM, "max_abs_logit": NUM,
                  "mean_abs_logit": NUM, "budget": obj({"max_auc_drop": NUM, "min_mask_agreement": nullable(NUM)}),
                  "passed": BOOL, "reasons": arr(STR), "level": STR, "videos": INT, "window": INT,
                  "frame_agreement": nullable(NUM)}, ("data", "delta_auc", "passed"))
HOST_VALIDATION = obj({"crops": INT, "reference_auc": NUM, "auc": NUM, "delta_auc": NUM, "flip_rate": NUM,
                       "mask_agreement": NUM, "max_abs_logit": NUM, "threshold": NUM, "reference_threshold": NUM},
                      ("crops", "auc", "delta_auc"))
OUTPUT = obj({"shape": arr({"type": "integer", "minimum": 1}, least=1), "meaning": STR}, ("shape",))
DEVICE_FACTS = obj({"cpu": STR, "isa": arr(STR), "cores": nullable(INT), "os": STR, "machine": STR, "python": STR,
                    "runtime": STR, "runtime_version": nullable(STR), "accelerators": arr(STR)})

MANIFEST_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "dfedge bundle manifest",
    **obj({
        "schema": {"const": BUNDLE_SCHEMA},
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
        "target": STR,
        "precision": STR,
        "model_file": FILE_NAME,
        "runtime": STR,
        "code": obj({"entry": FILE_NAME, "package": FILE_NAME, "version": STR}, ("entry", "package")),
        "input": obj({"name": STR, "shape": arr({"type": "integer", "minimum": 1}, 4), "dtype": {"const": "float32"},
                      "layout": {"enum": ["NCHW", "NHWC"]}, "range": RANGE, "colour_order": {"enum": ["RGB"]}},
                     ("name", "shape", "layout")),
        "alignment": obj({"crop_size": {"type": "integer", "minimum": 1}, "template": arr(POINT, 5),
                          "points": arr(STR, 5), "convention": STR, "method": STR}, ("crop_size", "template")),
        "outputs": obj({name: OUTPUT for name in OUTPUT_NAMES}, OUTPUT_NAMES),
        "labels": obj({"label_set": STR, "label_names": arr(STR), "region": STR, "region_classes": arr(INT),
                       "membership_threshold": NUM, "token_grid": arr(INT, 2)}, ("region",)),
        "probe": obj({"head": STR, "threshold_logit": NUM, "threshold_probability": NUM, "rule": STR,
                      "positive_class": {"enum": ["fake"]}, "fitted_on": nullable(STR), "guard": nullable(GUARD),
                      "head_config": nullable(FREE)}, ("threshold_logit",)),
        "files": {"type": "object", "minProperties": 1, "additionalProperties": False,
                  "patternProperties": {REL_PATH: FILE}},
        "sources": {"type": "object", "additionalProperties": SOURCE},
        "random_weights": arr(STR),
        "versions": {"type": "object", "additionalProperties": nullable(STR)},
        "export_options": obj({"preset": STR, "head": STR, "region": STR, "dinov3_input": INT, "region_index": STR,
                               "backbone": STR, "validation": nullable(STR), "parity_samples": INT}),
        "runtime_options": FREE,
        "validated_on": DEVICE_FACTS,
        "placement": PLACEMENT,
        "conversion": obj({"tool": STR, "settings": FREE, "calibration": nullable(FREE), "float_nodes": INT,
                           "weight_only_int8": {}, "quantized_int8": INT, "reverted_to_float": arr(STR),
                           "accuracy": FREE, "float_region_math": STR}),
        "parity": obj({"reference": STR, "samples": INT, "max_abs_logit": NUM, "mean_abs_logit": NUM,
                       "max_logit_error": NUM, "mask_agreement": NUM, "masks_identical": BOOL,
                       "vote_agreement": nullable(NUM), "thresholds": FREE, "ok": BOOL}, ("ok",)),
        "front_end": obj({"detector": STR, "title": STR, "files": {"type": "object", "minProperties": 1,
                                                                    "additionalProperties": FILE_NAME},
                          "inputs": STR, "sources": obj({"file": STR, "sha256": SHA256, "licence": STR,
                                                         "converted_from": {"type": "object", "additionalProperties": STR}}),
                          "settings": FREE, "parity": FREE}, ("files", "detector")),
        "temporal": obj({"file": FILE_NAME, "frames": {"type": "integer", "minimum": 1},
                         "feature_dim": {"type": "integer", "minimum": 1}, "threshold_logit": NUM,
                         "min_valid": {"type": "integer", "minimum": 1}, "precision": STR, "input": FREE,
                         "outputs": {"type": "object", "additionalProperties": STR}, "config": FREE,
                         "trained_on": nullable(STR),
                         "sources": obj({"file": STR, "sha256": SHA256, "trained_on": nullable(STR)}),
                         "stream": STR, "parity": FREE, "gate": VALIDATION},
                        ("file", "frames", "feature_dim", "threshold_logit")),
        "gate": VALIDATION,
        "validation_pack": obj({"file": FILE_NAME, "crops": INT, "fakes": INT, "data": STR, "ids": arr(STR),
                                "host": HOST_VALIDATION}, ("file",)),
    }, ("schema", "name", "target", "precision", "model_file", "code", "input", "alignment", "outputs", "labels",
        "probe", "files", "front_end")),
}

_FILE_V1 = {"type": "object", "required": ["sha256", "bytes"], "additionalProperties": False,
            "properties": {"sha256": SHA256, "bytes": {"type": "integer", "minimum": 0}}}
# What schema-1 bundles were written against (a subset: other keys were allowed), kept to read them.
SCHEMA_V1 = {
    "type": "object",
    "required": ["schema", "name", "target", "precision", "model_file", "input", "alignment", "outputs", "labels",
                 "probe", "files"],
    "properties": {
        "schema": {"const": BUNDLE_SCHEMA_V1},
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
        "target": STR, "precision": STR, "model_file": FILE_NAME,
        "input": {"type": "object", "required": ["name", "shape", "layout"],
                  "properties": {"name": STR, "layout": {"enum": ["NCHW", "NHWC"]},
                                 "shape": arr({"type": "integer", "minimum": 1}, 4)}},
        "alignment": {"type": "object", "required": ["crop_size", "template"],
                      "properties": {"crop_size": {"type": "integer", "minimum": 1}, "template": arr(POINT, 5)}},
        "outputs": {"type": "object"},
        "labels": {"type": "object", "required": ["region"], "properties": {"region": STR, "token_grid": arr(INT, 2)}},
        "probe": {"type": "object", "required": ["threshold_logit"],
                  "properties": {"threshold_logit": NUM, "guard": {"type": ["object", "null"], "properties": {
                      "tokens": RANGE, "row": RANGE, "col": RANGE}}}},
        "random_weights": arr(STR),
        "runtime_options": FREE,
        "temporal": {"type": ["object", "null"], "required": ["file", "frames", "feature_dim", "threshold_logit"],
                     "properties": {"file": STR, "frames": {"type": "integer", "minimum": 1},
                                    "feature_dim": {"type": "integer", "minimum": 1}, "threshold_logit": NUM,
                                    "min_valid": {"type": "integer", "minimum": 1}}},
        "front_end": {"type": ["object", "null"], "required": ["files"],
                      "properties": {"files": {"type": "object", "required": ["pnet", "rnet", "onet"],
                                               "additionalProperties": STR}, "settings": FREE}},
        "files": {"type": "object", "minProperties": 1, "additionalProperties": False,
                  "patternProperties": {REL_PATH: _FILE_V1}},
    },
}

_TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool,
          "null": type(None)}


def schema_errors(value, schema: dict, where: str = "") -> list[str]:
    """What in `value` breaks `schema`, as "where: problem" lines. A JSON Schema validator of the keywords the
    manifest schemas use, written here because a bundle runs with numpy and the runtime only (no jsonschema); the
    tests check it against jsonschema."""
    here = where or "/"
    if "anyOf" in schema:
        tries = [schema_errors(value, s, where) for s in schema["anyOf"]]
        return [] if any(not t for t in tries) else min(tries, key=len)
    if "const" in schema and value != schema["const"]:
        return [f"{here}: must be {schema['const']!r}, not {shown(repr(value))}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{here}: must be one of {schema['enum']}, not {shown(repr(value))}"]
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(isinstance(value, _TYPES[t]) and not (t in ("integer", "number") and isinstance(value, bool)) for t in types)
        if not ok:
            return [f"{here}: must be {' or '.join(types)}, not {type(value).__name__}"]
    errors = []
    if isinstance(value, float) and not math.isfinite(value):
        errors.append(f"{here}: must be a finite number, not {value}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{here}: {shown(repr(value))} is not allowed here")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < schema.get("minimum", value):
            errors.append(f"{here}: must be at least {schema['minimum']}")
        if value > schema.get("maximum", value):
            errors.append(f"{here}: must be at most {schema['maximum']}")
        if "exclusiveMinimum" in schema and not value > schema["exclusiveMinimum"]:
            errors.append(f"{here}: must be more than {schema['exclusiveMinimum']}")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            errors.append(f"{here}: has {len(value)} items")
        for i, item in enumerate(value):
            errors += schema_errors(item, schema.get("items", {}), f"{where}/{i}")
    if isinstance(value, dict):
        errors += [f"{where}/{k}: missing" for k in schema.get("required", []) if k not in value]
        if len(value) < schema.get("minProperties", 0):
            errors.append(f"{here}: is empty")
        for key, item in value.items():
            at = f"{where}/{shown(key)}"  # JSON keys are strings: an error line names at most ECHO characters of one
            if key in schema.get("properties", {}):
                errors += schema_errors(item, schema["properties"][key], at)
                continue
            matched = [s for p, s in schema.get("patternProperties", {}).items() if re.search(p, key)]
            extra = schema.get("additionalProperties", True)
            if matched:
                errors += schema_errors(item, matched[0], at)
            elif extra is False:
                errors.append(f"{at}: not allowed here")
            elif isinstance(extra, dict):
                errors += schema_errors(item, extra, at)
    return errors
