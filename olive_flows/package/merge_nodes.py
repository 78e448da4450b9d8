"""Fewer kernels per decoded token: two exact rewrites of a package's graph, in every branch.

On a 135M model a token runs some 700 kernels, and the small ones cost about as much as the weight
traffic (bench/RESULTS.md, bandwidth_fraction), so a kernel less per layer is speed:

- packed attention: a Split that cuts one value into exactly the query, key and value a
  GroupQueryAttention reads (the Q4_1 pass computes q, k and v as one packed MatMul) goes, and the
  attention reads the packed value, which GroupQueryAttention takes when key and value are left out;
- chained Adds: ``Add(Add(a, b), c)``, where nothing else reads the inner Add, becomes
  ``Sum(a, b, c)``: with an adapter active, a Q4_1 projection's block offsets and its LoRA join its
  output in one kernel instead of two.

Both give the same values bit for bit (onnxruntime's Sum adds its inputs in order, as the Adds
did); tests/test_merge_nodes.py checks the outputs of both rewrites against the graph before them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ATTENTION = "GroupQueryAttention"
ALWAYS_FLOAT = {"DynamicQuantizeMatMul", "GroupQueryAttention", "MatMulNBits"}  # float outputs only
SAME_TYPE = {"Add", "Concat", "MatMul", "Split", "Sum"}  # output type = its inputs' type


def _graphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every subgraph in it (an If's branches), depth first."""
    import onnx

    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attribute.g)


def merge_graph(model_path: Path) -> dict[str, int]:
    """Rewrite ``model_path`` (external weights left on disk) with both rewrites; return how many
    of each were made (nothing is written when none was)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    graphs = list(_graphs(model.graph))
    # Value names are unique across the branches (adapter_switch prefixes them), so one count over
    # every graph tells whether anything but the rewritten node reads a value, an outer-scope
    # read from inside a branch included.
    reads = Counter(name for graph in graphs for node in graph.node for name in node.input)
    reads.update(output.name for graph in graphs for output in graph.output)
    constants = {init.name: init for graph in graphs for init in graph.initializer}
    floating = _float_values(graphs)
    made = {"packed_attention": 0, "sums": 0}
    for graph in graphs:
        made["packed_attention"] += _packed_attention(graph, reads, constants)
        made["sums"] += _sums(graph, reads, floating)
    if any(made.values()):
        model_path.write_bytes(model.SerializeToString())
    return made


def _packed_attention(graph: Any, reads: Counter, constants: dict[str, Any]) -> int:
    """Feed each GroupQueryAttention whose query, key and value one Split cuts from a packed value
    that value instead, and drop the Split. The Split's widths must be the attention's: query
    num_heads heads, key and value kv_num_heads each."""
    from onnx import helper, numpy_helper

    producer = {output: node for node in graph.node for output in node.output}
    dropped = set()
    for node in graph.node:
        if node.op_type != ATTENTION or len(node.input) < 3:
            continue
        split = producer.get(node.input[0])
        if split is None or split.op_type != "Split" or list(split.output) != list(node.input[:3]):
            continue
        widths = constants.get(split.input[1]) if len(split.input) > 1 else None
        axis = next((helper.get_attribute_value(a) for a in split.attribute if a.name == "axis"), 0)
        if widths is None or axis != -1 or any(reads[name] != 1 for name in split.output):
            continue
        q, k, v = (int(w) for w in numpy_helper.to_array(widths))
        heads = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if k != v or q * heads.get("kv_num_heads", 0) != k * heads.get("num_heads", 0):
            continue
        node.input[:3] = [split.input[0], "", ""]
        dropped.add(split.output[0])
    _remove(graph, dropped)
    return len(dropped)


def _sums(graph: Any, reads: Counter, floating: Any) -> int:
    """Merge each Add whose first input is an Add read by nothing else into one Sum. Only float
    chains (onnxruntime's Sum has no integer kernel)."""
    producer = {output: node for node in graph.node for output in node.output}
    dropped = set()
    for node in graph.node:
        inner = producer.get(node.input[0]) if node.op_type == "Add" else None
        if inner is None or inner.op_type != "Add" or reads[inner.output[0]] != 1 or not floating(node.input[0]):
            continue
        node.op_type = "Sum"
        node.input[:] = [*inner.input, node.input[1]]
        dropped.add(inner.output[0])
    _remove(graph, dropped)
    return len(dropped)


def _float_values(graphs: list[Any]) -> Any:
    """A test of whether a value is floating point, from the few ops these graphs join: follow the
    inputs of ops whose inputs and output share one type (a Split's first) to a kernel whose output
    is always float or to a float graph input or initializer."""
    import onnx

    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    producer = {output: node for graph in graphs for node in graph.node for output in node.output}
    types = {value.name: value.type.tensor_type.elem_type for graph in graphs for value in graph.input}
    types.update((init.name, init.data_type) for graph in graphs for init in graph.initializer)

    def floating(name: str) -> bool:
        seen, todo = set(), [name]
        while todo:
            name = todo.pop()
            if not name or name in seen:
                continue
            seen.add(name)
            node = producer.get(name)
            if node is None:
                if types.get(name) in floats:
                    return True
            elif node.op_type in ALWAYS_FLOAT:
                return True
            elif node.op_type in SAME_TYPE:
                todo.extend(node.input[:1] if node.op_type == "Split" else node.input)
        return False

    return floating


def _remove(graph: Any, dropped: set[str]) -> None:
    """Drop the nodes whose first output is in ``dropped``, keeping the others in order."""
    if dropped:
        kept = [node for node in graph.node if node.output[0] not in dropped]
        del graph.node[:]
        graph.node.extend(kept)
