"""ONNX input names for features of any name, and the renaming of a graph's inputs to them.

An ONNX name is a C identifier (ASCII letters, digits and `_`, not starting with a digit), and
skl2onnx makes one of its own from a feature's name, by rules of its own. A feature may be
named `od280/od315_of_diluted_wines`, `mean radius`, `pH.level` or `température`, so a
converted graph's inputs are renamed to `input_names(features)`: a name that is an identifier
already stays as it is; any other has each character that cannot be in one replaced by `_`
(and `_` put before a leading digit), then `_2`, `_3`, ... added until it is distinct. The
mapping depends on the feature names alone: a server computes it from the signature, and
nothing is stored beside the graph.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_IN_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]")


def input_names(features: Sequence[str]) -> list[str]:
    """The ONNX input name of each feature, in order; distinct, and valid ONNX names."""
    kept = {name for name in features if _IDENTIFIER.fullmatch(name)}
    taken = set(kept)
    names = []
    for feature in features:
        if feature in kept:
            names.append(feature)
            continue
        base = _NOT_IN_IDENTIFIER.sub("_", feature)
        if not base or base[0].isdigit():
            base = "_" + base
        name, n = base, 2
        while name in taken:  # at most len(features) steps: each step passes a taken name
            name, n = f"{base}_{n}", n + 1
        taken.add(name)
        names.append(name)
    return names


def rename_inputs(model: Any, names: Sequence[str]) -> None:
    """Rename the inputs of the ONNX `model` (a ModelProto), in order, to `names`, and every
    reference to them; a value inside the graph that already has one of the names is renamed
    out of the way."""
    graph = model.graph
    old = [i.name for i in graph.input]
    if len(old) != len(names):
        raise ValueError(f"the graph has {len(old)} inputs for {len(names)} features")
    mapping = {o: n for o, n in zip(old, names, strict=True) if o != n}
    if not mapping:
        return
    used = set(value_names(graph)) - set(old)
    wanted = set(mapping.values())
    for clash in sorted(wanted & used):
        mapping[clash] = fresh_name(clash, used | wanted)
        used.add(mapping[clash])
    rename_values(graph, mapping)


def fresh_name(base: str, taken: set[str]) -> str:
    """A name like `base` that is not in `taken`: `base_`, then `base_2`, `base_3`, ..."""
    fresh, n = f"{base}_", 2
    while fresh in taken:  # at most len(taken) steps
        fresh, n = f"{base}_{n}", n + 1
    return fresh


def _subgraphs(node: Any) -> Iterator[Any]:
    for attribute in node.attribute:
        if attribute.HasField("g"):
            yield attribute.g
        yield from attribute.graphs


def value_names(graph: Any) -> Iterator[str]:
    """Every name a value has in `graph` (a GraphProto) and its subgraphs, with repeats."""
    for value in (*graph.input, *graph.output, *graph.value_info):
        yield value.name
    for tensor in graph.initializer:
        yield tensor.name
    for node in graph.node:
        yield from node.input
        yield from node.output
        for subgraph in _subgraphs(node):
            yield from value_names(subgraph)


def rename_values(graph: Any, mapping: Mapping[str, str]) -> None:
    """Rename the values of `graph` (and of its subgraphs) named in `mapping`, everywhere."""
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        value.name = mapping.get(value.name, value.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = mapping.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = mapping.get(name, name)
        for subgraph in _subgraphs(node):
            rename_values(subgraph, mapping)
