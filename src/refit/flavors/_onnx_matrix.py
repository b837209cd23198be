"""One `[N, F]` matrix input in front of a converted graph that takes one input per feature.

skl2onnx converts refit's pipelines (which select columns by name) to a graph of one `[N, 1]`
input per feature. Fed that way, ONNX Runtime pays for every input on every call: for the 30
features of the breast-cancer pipeline, `session.run` on one row costs ~23 µs. Here such a
graph takes one float `[N, F]` input, `MATRIX_INPUT`, split along its columns into the
inputs the converted pipeline reads: ~10 µs for the same row. When the pipeline's first step
joins all those inputs in order again (a `Concat` on axis 1, as a `ColumnTransformer` of one
numeric branch does), the split and the join cancel out and the matrix feeds that step's
readers directly: ~5 µs. (Measured in process on the 2-core machine of `bench/`, one
intra-op thread.)
"""

from __future__ import annotations

from typing import Any

from refit.flavors._onnx_names import fresh_name, rename_values, value_names

MATRIX_INPUT = "features"
"""The input of a converted graph whose features are all numbers (float, int or bool): one
float `[N, F]` matrix of them, in the order of the sample it was converted with (the
signature's), a missing value as NaN."""

_SPLIT_SIZES_AS_INPUT = 13
"""From this opset on, Split takes its sizes as an input rather than as an attribute."""


def take_matrix(model: Any) -> None:
    """Give the ONNX `model` (a ModelProto) whose inputs are `[N, 1]` floats, one per feature,
    one float `[N, F]` input named `MATRIX_INPUT` in their place, column `j` standing for input
    `j`."""
    from onnx import TensorProto, helper

    graph = model.graph
    if MATRIX_INPUT in set(value_names(graph)):  # a feature of that name: moved out of the way
        rename_values(graph, {MATRIX_INPUT: fresh_name(MATRIX_INPUT, set(value_names(graph)))})
    parts = [i.name for i in graph.input]
    rows = helper.make_tensor_value_info(MATRIX_INPUT, TensorProto.FLOAT, [None, len(parts)])
    rows.type.tensor_type.shape.dim[0].CopyFrom(graph.input[0].type.tensor_type.shape.dim[0])
    join = _join_of(graph, parts)
    if join is not None:
        graph.node.remove(join)
        stale = [v for v in graph.value_info if v.name == join.output[0]]
        for value in stale:
            graph.value_info.remove(value)
        rename_values(graph, {join.output[0]: MATRIX_INPUT})
    else:
        graph.node.insert(0, _split(graph, _opset(model), parts))
    del graph.input[:]
    graph.input.append(rows)


def _split(graph: Any, opset: int, parts: list[str]) -> Any:
    from onnx import helper, numpy_helper

    sizes = [1] * len(parts)
    if opset < _SPLIT_SIZES_AS_INPUT:
        return helper.make_node("Split", [MATRIX_INPUT], parts, axis=1, split=sizes)
    import numpy as np

    name = fresh_name("split_sizes", set(value_names(graph)))
    graph.initializer.append(numpy_helper.from_array(np.array(sizes, dtype=np.int64), name))
    return helper.make_node("Split", [MATRIX_INPUT, name], parts, axis=1)


def _opset(model: Any) -> int:
    """The version of the default ONNX domain the model imports (one is added if it has none:
    Split is in that domain)."""
    from onnx import helper

    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return int(opset.version)
    model.opset_import.append(helper.make_opsetid("", _SPLIT_SIZES_AS_INPUT))
    model.ir_version = max(model.ir_version, 7)  # the first IR version of opset 13
    return _SPLIT_SIZES_AS_INPUT


def _join_of(graph: Any, parts: list[str]) -> Any | None:
    """The node that concatenates exactly `parts`, in order, on their column axis, when
    nothing else reads any of them (so that it can give way to the matrix); else None."""
    readers = [
        node for node in graph.node if not {*node.input}.isdisjoint(parts) or _has_subgraph(node)
    ]
    if len(readers) != 1:
        return None
    (node,) = readers
    axis = next((a.i for a in node.attribute if a.name == "axis"), None)
    outputs = {o.name for o in graph.output}
    if (
        node.op_type != "Concat"
        or node.domain not in ("", "ai.onnx")
        or axis not in (1, -1)
        or list(node.input) != parts
        or node.output[0] in outputs
        or not outputs.isdisjoint(parts)
    ):
        return None
    return node


def _has_subgraph(node: Any) -> bool:
    """Whether `node` holds a subgraph, which may read any value of the graph around it."""
    return any(a.HasField("g") or len(a.graphs) for a in node.attribute)
