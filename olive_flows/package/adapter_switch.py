"""Run a package's LoRA nodes only while an adapter is active: one If on a flag each adapter sets.

ExtractAdapters leaves every LoRA path in the graph, and with no adapter active it still runs, on
its defaults (one zero row or column each), adding exact zeros at every token: a few hundred small
kernels per token on the quickstart (make bench measures what skipping them saves:
adapter_switch_base_speedup). Here the graph becomes

    outer graph   everything computed from the weights alone (onnxruntime folds it at load),
                  Cast(flag) and one If
    then branch   the graph as it was: an adapter is active
    else branch   the graph without its LoRA paths: each Add that joins a LoRA path to the base
                  passes the base through, and what only fed those Adds is dropped

Both branches read the same weights from the outer graph, so nothing is stored twice, and each
branch computes exactly what the whole graph did, bit for bit. The flag is a graph input, 0 by
default, and every adapter file sets it to 1; it is a float because .onnx_adapter files hold no
booleans.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from olive_flows.layout import adapter_files
from olive_flows.package.assemble import PackageError

FLAG = "olive_flows.adapter_active"
SWITCH = "olive_flows/adapter_switch"


def switch_graph(model_path: Path) -> bool:
    """Rewrite ``model_path`` (external weights left on disk) so that its LoRA nodes run only
    with an adapter active; False, and nothing changed, when the graph has no LoRA inputs."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    defaults = {init.name for init in graph.initializer}
    adapter_inputs = {value.name for value in graph.input if value.name in defaults}
    if not adapter_inputs or FLAG in defaults:
        return False
    constant = (defaults - adapter_inputs) | {""}
    outer, body = [], []
    for node in graph.node:
        if all(name in constant for name in node.input):
            outer.append(node)
            constant.update(node.output)
        else:
            body.append(node)
    outputs = [value.name for value in graph.output]
    base, bypass = _without_lora(model_path, body, adapter_inputs, constant, outputs)
    switch = helper.make_node(
        "If",
        [f"{FLAG}.bool"],
        outputs,
        name=SWITCH,
        then_branch=_branch(body, {}, "adapter/", "adapter_active", graph.output),
        else_branch=_branch(base, bypass, "base/", "base_alone", graph.output),
    )
    cast = helper.make_node("Cast", [FLAG], [f"{FLAG}.bool"], name=f"{SWITCH}/Cast", to=onnx.TensorProto.BOOL)
    del graph.node[:]
    graph.node.extend([*outer, cast, switch])
    del graph.value_info[:]  # the intermediate values now live inside the branches, renamed
    graph.input.append(helper.make_tensor_value_info(FLAG, onnx.TensorProto.FLOAT, [1]))
    graph.initializer.append(numpy_helper.from_array(np.zeros(1, np.float32), FLAG))
    model_path.write_bytes(model.SerializeToString())
    return True


def _without_lora(
    model_path: Path, nodes: list[Any], adapter_inputs: set[str], constant: set[str], outputs: list[str]
) -> tuple[list[Any], dict[str, str]]:
    """The ``nodes`` not computed from an adapter input, and what each Add joining a LoRA path to the
    base (a value neither LoRA nor ``constant``) is bypassed by: its output -> that base value."""
    lora = set(adapter_inputs)  # values computed from adapter inputs
    bypass: dict[str, str] = {}
    kept = []
    for node in nodes:
        from_lora = [name in lora for name in node.input]
        if not any(from_lora):
            kept.append(node)
            continue
        base = [name for name, hit in zip(node.input, from_lora, strict=True) if not hit and name not in constant]
        if node.op_type == "Add" and len(base) == 1 and from_lora.count(True) == 1:
            bypass[node.output[0]] = bypass.get(base[0], base[0])  # LoRA paths added one after another
            continue
        if base and any(hit and name not in adapter_inputs for name, hit in zip(node.input, from_lora, strict=True)):
            raise PackageError(
                f"{model_path}: cannot separate the LoRA nodes from the base: {node.name} ({node.op_type}) "
                "joins a LoRA path to the base other than by adding it"
            )
        lora.update(node.output)
    if lora & {bypass.get(name, name) for name in outputs}:
        raise PackageError(f"{model_path}: cannot separate the LoRA nodes from the base: a graph output needs them")
    return kept, bypass


def _branch(nodes: list[Any], bypass: dict[str, str], prefix: str, name: str, outputs: Any) -> Any:
    """A subgraph of copies of ``nodes`` ending in the graph's outputs: every value read through
    ``bypass``, and every value the nodes compute renamed ``prefix + name`` (an If's branches may not
    reuse a value name of the outer graph)."""
    import copy

    from onnx import helper

    nodes = [copy.deepcopy(node) for node in nodes]
    renamed = {output: prefix + output for node in nodes for output in node.output if output}

    def value(name: str) -> str:
        name = bypass.get(name, name)
        return renamed.get(name, name)

    for node in nodes:
        node.input[:] = [value(name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]
    results = []
    for output in outputs:
        result = copy.deepcopy(output)
        result.name = value(output.name)
        results.append(result)
    return helper.make_graph(nodes, name, [], results)


def switch_package(folder: Path) -> bool:
    """Switch a staged package's graph and mark every adapter file; False when the graph has no
    LoRA inputs (and nothing changed)."""
    from olive.common.utils import load_weights, save_weights

    if not switch_graph(folder / "model.onnx"):
        return False
    for path in adapter_files(folder).values():  # each sets the flag that selects the adapter branch
        save_weights({**load_weights(path), FLAG: np.ones(1, np.float32)}, path, "onnx_adapter")
    return True


def branch_nodes(graph: Any, branch: str = "then_branch") -> list[Any]:
    """The nodes a graph runs, the outer graph's and those of ``branch`` of its adapter switch
    (then_branch: an adapter active; else_branch: the base alone); a graph without one, as it is."""
    nodes = []
    for node in graph.node:
        if node.op_type == "If" and node.name == SWITCH:
            nodes.extend(next(a.g for a in node.attribute if a.name == branch).node)
        else:
            nodes.append(node)
    return nodes
