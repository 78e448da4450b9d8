"""Share one LoRA A MatMul among the projections a packed MatMul computes.

The Q4_1 pass computes a layer's q, k and v projections (and gate and up) as one MatMul whose
output a Split cuts apart; after ExtractAdapters each part still has its own LoRA: a MatMul by A,
a MatMul by B and an Add per projection, run at every token even with no adapter active. Here the
A matrices go side by side into one input, and the rank-r parts of ``x @ [A_q | A_k | A_v]`` go
through their own B, concatenated and added once to the packed output before its Split:

    x @ [A_q | A_k | A_v]  ->  split by rank  ->  @ B_q, @ B_k, @ B_v  ->  concat  ->  + packed

One A MatMul and one Add instead of three each; no weight is stored twice (a block-diagonal B,
with no split, would have tripled the B files). The ranks the split cuts at are a small int64
input each adapter file sets, so ranks may differ by module (peft's rank_pattern). Every adapter
file is rewritten to match.

No part is ever empty: with no adapter active the fused A is one zero column per projection (ranks
[1, 1, 1]) and each B one zero row, and an adapter without one of the projections gives it such a
zero column. An empty part is a LoRA MatMul with an inner dimension of 0, on which onnxruntime's
DynamicQuantizeMatMul (int8 adapter weights, adapter_weights.py) returns garbage, where the zeros
add exact zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from olive_flows.layout import adapter_files

FUSED_RANK = "lora_r_fused"


@dataclass(frozen=True)
class Fused:
    """The A inputs of one packed MatMul's projections, in its Split's output order, the one input
    that replaces them, and the input of the ranks to split its product at."""

    a: list[str]
    fused_a: str
    ranks: str


@dataclass(frozen=True)
class _Lora:
    """``output + x @ A @ B``: the nodes and the A input of one projection's LoRA, and the nodes
    that read the sum."""

    x: str
    a: str
    a_matmul: Any
    b_matmul: Any
    add: Any
    readers: list[Any]


def _lora_of(output: str, consumers: dict[str, list[Any]], producer: dict[str, Any], inputs: set[str]) -> _Lora | None:
    """The LoRA added to ``output`` when that Add is the only use of it, with A and B graph inputs."""
    users = consumers.get(output, [])
    if len(users) != 1 or users[0].op_type != "Add" or users[0].input[0] != output:
        return None
    add = users[0]
    b_matmul = producer.get(add.input[1])
    if b_matmul is None or b_matmul.op_type != "MatMul" or b_matmul.input[1] not in inputs:
        return None
    a_matmul = producer.get(b_matmul.input[0])
    if a_matmul is None or a_matmul.op_type != "MatMul" or a_matmul.input[1] not in inputs:
        return None
    if len(consumers[a_matmul.output[0]]) != 1 or len(consumers[b_matmul.output[0]]) != 1:
        return None
    return _Lora(a_matmul.input[0], a_matmul.input[1], a_matmul, b_matmul, add, consumers.get(add.output[0], []))


def _packed_loras(graph: Any) -> list[tuple[Any, list[_Lora]]]:
    """Each Split whose every output feeds only its own LoRA Add, all from one input, with its LoRAs."""
    producer = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inputs = {value.name for value in graph.input}
    found = []
    for split in (node for node in graph.node if node.op_type == "Split" and len(node.output) > 1):
        loras = [_lora_of(output, consumers, producer, inputs) for output in split.output]
        if all(loras) and len({lora.x for lora in loras}) == 1:
            found.append((split, loras))
    return found


def fuse_graph(model_path: Path) -> list[Fused]:
    """Fuse the LoRA A MatMuls of every packed MatMul; rewrite ``model_path`` (weights left on disk)
    and return what was fused."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    inputs = {value.name: value for value in graph.input}
    defaults = {init.name: init for init in graph.initializer}
    fused: list[Fused] = []
    removed: set[str] = set()  # nodes by their first output, unique in a graph
    before: dict[str, list[Any]] = {}  # a Split's first output -> the nodes that go in front of it
    for split, loras in _packed_loras(graph):
        names = [lora.a for lora in loras]
        types = {inputs[name].type.tensor_type.elem_type for name in names}
        rows = {dims[0].dim_value for dims in (inputs[name].type.tensor_type.shape.dim for name in names)}
        if len(types) != 1 or types == {onnx.TensorProto.BFLOAT16} or len(rows) != 1 or 0 in rows:
            continue  # (bf16: the adapter files are rewritten with numpy, which has no bfloat16)
        element, width = types.pop(), rows.pop()
        fused_a, ranks = names[0] + ".fused", names[0] + ".fused.ranks"
        stem = loras[0].a_matmul.name.split("/lora_A/")[0].rsplit("/", 1)[0] + "/packed"  # /model/layers.0/attn
        parts = [f"{stem}/lora_A/output_{i}" for i in range(len(loras))]
        for lora, output, part in zip(loras, split.output, parts, strict=True):
            removed.update({lora.a_matmul.output[0], lora.add.output[0]})
            lora.b_matmul.input[0] = part
            for reader in lora.readers:  # what read the projection plus its LoRA reads the Split's output
                reader.input[:] = [output if name == lora.add.output[0] else name for name in reader.input]
            graph.input.remove(inputs[lora.a])
            if lora.a in defaults:
                graph.initializer.remove(defaults[lora.a])
        graph.input.append(helper.make_tensor_value_info(fused_a, element, [width, FUSED_RANK]))
        graph.input.append(helper.make_tensor_value_info(ranks, onnx.TensorProto.INT64, [len(loras)]))
        if names[0] in defaults:  # optional inputs: one zero column and row each with no adapter active
            dtype = helper.tensor_dtype_to_np_dtype(element)
            graph.initializer.append(numpy_helper.from_array(np.zeros([width, len(loras)], dtype), fused_a))
            graph.initializer.append(numpy_helper.from_array(np.ones(len(loras), np.int64), ranks))
            for lora in loras:
                _one_zero_row(defaults.get(lora.b_matmul.input[1]))
        packed = split.input[0]
        before[split.output[0]] = [
            helper.make_node("MatMul", [loras[0].x, fused_a], [f"{stem}/lora_A/output"], name=f"{stem}/lora_A/MatMul"),
            helper.make_node("Split", [f"{stem}/lora_A/output", ranks], parts, name=f"{stem}/lora_A/Split", axis=-1),
            *(lora.b_matmul for lora in loras),
            helper.make_node(
                "Concat",
                [lora.b_matmul.output[0] for lora in loras],
                [f"{stem}/lora_B/output"],
                axis=-1,
                name=f"{stem}/lora_B/Concat",
            ),
            helper.make_node("Add", [packed, f"{stem}/lora_B/output"], [f"{packed}_lora"], name=f"{stem}/lora/Add"),
        ]
        removed.update(lora.b_matmul.output[0] for lora in loras)
        split.input[0] = f"{packed}_lora"
        fused.append(Fused(names, fused_a, ranks))
    if fused:
        nodes = []
        for node in graph.node:
            nodes.extend(before.get(node.output[0], []))
            if node.output[0] not in removed:
                nodes.append(node)
        del graph.node[:]
        graph.node.extend(nodes)
        model_path.write_bytes(model.SerializeToString())
    return fused


def _one_zero_row(default: Any) -> None:
    """Make an empty B default (rank 0) one row of zeros, in place."""
    from onnx import numpy_helper

    if default is not None and default.dims and default.dims[0] == 0:
        zeros = np.zeros([1, *default.dims[1:]], numpy_helper.to_array(default).dtype)
        default.CopyFrom(numpy_helper.from_array(zeros, default.name))


def fuse_weights(weights: dict[str, np.ndarray], fused: list[Fused]) -> dict[str, np.ndarray]:
    """An adapter's weights with each fused group's A matrices side by side and their ranks; a
    projection the adapter leaves out gets one zero column (rank 1, its B input the graph's zero
    row)."""
    out = {name: value for name, value in weights.items() if not any(name in group.a for group in fused)}
    for group in fused:
        present = [weights[name] for name in group.a if name in weights]
        if not present:
            continue
        parts = [weights.get(name, np.zeros([present[0].shape[0], 1], present[0].dtype)) for name in group.a]
        out[group.fused_a] = np.concatenate(parts, axis=1)
        out[group.ranks] = np.array([part.shape[1] for part in parts], dtype=np.int64)
    return out


def fuse_package(folder: Path) -> int:
    """Fuse the packed projections' LoRA A in a staged package, its graph and every adapter file;
    return how many packed MatMuls were fused (0: the graph has none, and nothing changes)."""
    from olive.common.utils import load_weights, save_weights

    fused = fuse_graph(folder / "model.onnx")
    for path in adapter_files(folder).values() if fused else ():
        save_weights(fuse_weights(load_weights(path), fused), path, "onnx_adapter")
    return len(fused)
