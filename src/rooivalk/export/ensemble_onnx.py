"""One ONNX graph of an ensemble's weighted probabilities: a table plan's mlp and XGBoost model, or the
members of a variant ensemble (rooivalk.plan.variants), any number and any array family.

Graph: the members' shared inputs ("input" float32 (batch, F); or "sequences" float32 (batch, steps, F)
and "lengths" int64 (batch,)) -> "logits" float32 (batch, K) = log(max(sum_k w_k p_k(inputs), FLOOR)),
where p_k is softmax of a member's logits (its first output) or a member's probability output (XGBoost's).
The log makes the ensemble's probabilities come back from the softmax every rooivalk bundle applies
(softmax(log p) = p, as p sums to 1), so `Predictor`, the temperature fit and the variant scoring treat
it like any classifier; rooivalk.models.variant_ensemble computes the same in PyTorch, same floor. The
members' graphs are copied in with their names prefixed (`model/`, `xgboost/`, `member_<k>/`); only the
inputs are shared, and every member must take the same ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rooivalk.export._onnx_io import atomic_output
from rooivalk.export.onnx_export import OUTPUT_NAME
from rooivalk.export.xgboost_onnx import PROBABILITIES_OUTPUT
from rooivalk.models.variant_ensemble import FLOOR


@dataclass(frozen=True)
class GraphMember:
    """A member's ONNX file, the prefix its names take, and which output holds its probabilities
    (None: its first output holds logits, to which a softmax is applied)."""

    path: str | Path
    prefix: str
    probabilities: str | None = None


def _prefixed(graph: Any, prefix: str, shared: set[str]) -> tuple[list[Any], list[Any], dict[str, str]]:
    """(nodes, initializers) of `graph` with every name but the shared inputs prefixed; and the name map."""
    import onnx

    names = {name for node in graph.node for name in (*node.input, *node.output) if name}
    names |= {init.name for init in graph.initializer}
    rename = {name: f"{prefix}{name}" for name in names if name not in shared}
    nodes = []
    subgraphs = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)  # their outer-scope names would not follow
    for node in graph.node:
        if any(attribute.type in subgraphs for attribute in node.attribute):
            raise ValueError(f"node {node.name} ({node.op_type}) has a subgraph: such a graph cannot be merged")
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


def merge_members(members: Sequence[GraphMember], weights: Sequence[float], path: str | Path) -> Path:
    """Write the graph of the members' probabilities weighted by `weights` (as given: callers pass weights
    that sum to 1) to `path` (atomically); returns it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if len(members) < 1 or len(members) != len(weights) or min(weights) < 0:
        raise ValueError(f"{len(members)} members and weights {list(weights)}: give one weight >= 0 per member")
    models = [onnx.load(str(member.path)) for member in members]
    inputs = list(models[0].graph.input)
    shared = {value.name for value in inputs}
    nodes: list[Any] = []
    initializers: list[Any] = []
    weighted: list[str] = []
    for k, (member, model) in enumerate(zip(members, models, strict=True)):
        if model.functions:
            raise ValueError(f"{member.path}: a graph with local functions cannot be merged")
        own = {value.name for value in model.graph.input}
        if own != shared:
            raise ValueError(f"{member.path}: inputs {sorted(own)} are not the first member's {sorted(shared)}")
        member_nodes, member_inits, names = _prefixed(model.graph, member.prefix, shared)
        nodes += member_nodes
        initializers += member_inits
        weight = numpy_helper.from_array(np.array(weights[k], np.float32), f"ensemble/w_{k}")
        initializers.append(weight)
        if member.probabilities is None:  # logits -> probabilities
            source = f"ensemble/p_{k}"
            logits = names[model.graph.output[0].name]
            nodes.append(helper.make_node("Softmax", [logits], [source], axis=-1, name=f"ensemble/softmax_{k}"))
        else:
            source = names[member.probabilities]
        nodes.append(helper.make_node("Mul", [source, weight.name], [f"ensemble/wp_{k}"], name=f"ensemble/weigh_{k}"))
        weighted.append(f"ensemble/wp_{k}")
    initializers.append(numpy_helper.from_array(np.array(FLOOR, np.float32), "ensemble/floor"))
    nodes += [
        helper.make_node("Sum", weighted, ["ensemble/p"], name="ensemble/sum"),  # (batch, K)
        helper.make_node("Max", ["ensemble/p", "ensemble/floor"], ["ensemble/p_floor"], name="ensemble/floor"),
        helper.make_node("Log", ["ensemble/p_floor"], [OUTPUT_NAME], name="ensemble/log"),
    ]
    first = models[0].graph.output[0] if members[0].probabilities is None else None
    classes = first.type.tensor_type.shape.dim[-1].dim_value if first is not None else 0
    output = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", classes or None])
    graph = helper.make_graph(nodes, "rooivalk_ensemble", inputs, [output], initializer=initializers)
    opsets: dict[str, int] = {}
    for model in models:
        for opset in model.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
    merged = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(domain, version) for domain, version in opsets.items()]
    )
    merged.ir_version = max(model.ir_version for model in models)
    onnx.checker.check_model(merged)
    target = Path(path)
    with atomic_output(target) as tmp:
        onnx.save(merged, str(tmp))
    return target


def merge_ensemble(mlp_path: str | Path, xgboost_path: str | Path, weights: dict[str, float], path: str | Path) -> Path:
    """A table plan's ensemble: the mlp's logits and the XGBoost graph's probabilities, weighted."""
    members = [GraphMember(mlp_path, "model/"), GraphMember(xgboost_path, "xgboost/", PROBABILITIES_OUTPUT)]
    return merge_members(members, [weights["model"], weights["xgboost"]], path)
