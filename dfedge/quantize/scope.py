"""Which graph nodes hold the region math (detector.FLOAT_SUBMODULES + the Detector's own ops), per format."""

from __future__ import annotations

import ast
import re

from ..models.detector import FLOAT_SUBMODULES


def openvino_patterns() -> list[str]:
    """OpenVINO names converted nodes "__module.<path>/aten::op/Type"; the Detector's own ops have no module."""
    return [r"^aten::.*"] + [rf"^__module\.{re.escape(m)}(\.|/).*" for m in FLOAT_SUBMODULES]


def onnx_float_nodes(model) -> list[str]:
    """Node names of a dynamo-exported ONNX graph whose recorded module scope is the Detector itself or a float
    submodule (the exporter stores the scope in each node's `pkg.torch.onnx.name_scopes` metadata)."""
    names = []
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = meta.get("pkg.torch.onnx.name_scopes")
        if scopes is None:
            continue
        path = [s for s in ast.literal_eval(scopes)[1:-1]]  # drop the root '' and the op's own name
        if not path or path[0] in FLOAT_SUBMODULES:
            names.append(node.name)
    return names


def fx_is_float(node, root: str = "") -> bool:
    """Whether a torch.export FX node holds region math: its innermost module (from `nn_module_stack`, paths below
    `root`, the prefix of a wrapper around the Detector) is the Detector itself or a float submodule."""
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    path = stack[-1][0] if stack else ""
    if root:
        path = path[len(root) + 1:] if path.startswith(root + ".") else ""
    return not path or path.split(".")[0] in FLOAT_SUBMODULES
