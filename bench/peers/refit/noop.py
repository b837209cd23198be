"""A model that does nothing, for measuring the floor of refit's own serving stack.

It is an ONNX graph that takes the features as one `[N, F]` float matrix and answers, for
every row and without reading it, probability 1 for the first class: the shape of the input
becomes a `[N, classes]` tensor of zeros plus a constant row `[1, 0, ...]`. refit registers it
with `refit models register noop.onnx` (the `onnx` flavor) and serves it on the same path as
the real model, ONNX Runtime included, so the real model's throughput against this one is
the cost of the model itself.
"""

from __future__ import annotations

from onnx import TensorProto, helper


def noop_onnx(features: int, classes: int) -> bytes:
    first = [1.0] + [0.0] * (classes - 1)
    nodes = [
        helper.make_node("Shape", ["X"], ["shape"], start=0, end=1),  # [N]
        helper.make_node("Concat", ["shape", "classes"], ["out_shape"], axis=0),  # [N, C]
        helper.make_node(
            "ConstantOfShape",
            ["out_shape"],
            ["zeros"],
            value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
        ),
        helper.make_node("Add", ["zeros", "first"], ["probabilities"]),
    ]
    graph = helper.make_graph(
        nodes,
        "noop",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, classes])],
        [
            helper.make_tensor("classes", TensorProto.INT64, [1], [classes]),
            helper.make_tensor("first", TensorProto.FLOAT, [1, classes], first),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())
