"""One ONNX graph for a table plan's ensemble: the mlp and the XGBoost model, weighted.

Graph: "input" float32 (batch, F) -> "logits" float32 (batch, K) = log(w_model * softmax(mlp(input)) +
w_xgboost * xgboost_probabilities(input)). The log makes the ensemble's probabilities come back from the
softmax every rooivalk bundle applies (softmax(log p) = p, as p sums to 1), so `Predictor`, the
temperature fit and the variant scoring treat it like any classifier. The members' graphs are copied in
with their names prefixed (`model/`, `xgboost/`); only the input is shared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rooivalk.export._onnx_io import atomic_output
from rooivalk.export.onnx_export import INPUT_NAME, OUTPUT_NAME
from rooivalk.export.xgboost_onnx import PROBABILITIES_OUTPUT

_FLOOR = 1e-12  # log of a probability of exactly 0 would be -inf


def _prefixed(graph: Any, prefix: str) -> tuple[list[Any], list[Any], dict[str, str]]:
    """(nodes, initializers) of `graph` with every name but the shared input prefixed; and the name map."""
    import onnx

    names = {name for node in graph.node for name in (*node.input, *node.output) if name}
    names |= {init.name for init in graph.initializer}
    rename = {name: f"{prefix}{name}" for name in names if name != INPUT_NAME}
    nodes = []
    for node in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = f"{prefix}{node.name}"
        copy.input[:] = [rename.get(name, name) for name in node.input]
        copy.output[:] = [rename.get(name, name) for name in node.output]
        nodes.append(copy)
    initializers = []
    for init in graph.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = rename[init.name]
        initializers.append(copy)
    return nodes, initializers, rename


def merge_ensemble(mlp_path: str | Path, xgboost_path: str | Path, weights: dict[str, float], path: str | Path) -> Path:
    """Write the weighted ensemble graph of the two member files to `path` (atomically); returns it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    mlp, trees = onnx.load(str(mlp_path)), onnx.load(str(xgboost_path))
    if mlp.functions:
        raise ValueError(f"{mlp_path}: a graph with local functions cannot be merged")
    mlp_nodes, mlp_inits, mlp_names = _prefixed(mlp.graph, "model/")
    tree_nodes, tree_inits, tree_names = _prefixed(trees.graph, "xgboost/")
    classes = mlp.graph.output[0].type.tensor_type.shape.dim[-1]
    constants = [
        numpy_helper.from_array(np.array(weights["model"], np.float32), "ensemble/w_model"),
        numpy_helper.from_array(np.array(weights["xgboost"], np.float32), "ensemble/w_xgboost"),
        numpy_helper.from_array(np.array(_FLOOR, np.float32), "ensemble/floor"),
    ]
    mlp_logits = mlp_names[mlp.graph.output[0].name]
    tree_probabilities = tree_names[PROBABILITIES_OUTPUT]
    combine = [
        helper.make_node("Softmax", [mlp_logits], ["ensemble/p_model"], axis=-1, name="ensemble/softmax"),
        helper.make_node("Mul", ["ensemble/p_model", "ensemble/w_model"], ["ensemble/a"], name="ensemble/weigh_model"),
        helper.make_node(
            "Mul", [tree_probabilities, "ensemble/w_xgboost"], ["ensemble/b"], name="ensemble/weigh_xgboost"
        ),
        helper.make_node("Add", ["ensemble/a", "ensemble/b"], ["ensemble/p"], name="ensemble/add"),
        helper.make_node("Max", ["ensemble/p", "ensemble/floor"], ["ensemble/p_floor"], name="ensemble/floor"),
        helper.make_node("Log", ["ensemble/p_floor"], [OUTPUT_NAME], name="ensemble/log"),
    ]
    output = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", classes.dim_value or None])
    graph = helper.make_graph(
        [*mlp_nodes, *tree_nodes, *combine],
        "rooivalk_ensemble",
        [mlp.graph.input[0]],
        [output],
        initializer=[*mlp_inits, *tree_inits, *constants],
    )
    opsets: dict[str, int] = {}
    for model in (mlp, trees):
        for opset in model.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
    merged = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(domain, version) for domain, version in opsets.items()]
    )
    merged.ir_version = max(mlp.ir_version, trees.ir_version)
    onnx.checker.check_model(merged)
    target = Path(path)
    with atomic_output(target) as tmp:
        onnx.save(merged, str(tmp))
    return target
