"""Store a package's LoRA weights in 8 bits: adapter files a quarter of their fp32 size.

ExtractAdapters leaves every LoRA MatMul reading its weight from an optional graph input (its
default an empty tensor, rank 0, so the base runs with no adapter active). Here each such input
becomes int8, with a one-element scale input of the float type beside it and a DequantizeLinear in
front of the unchanged float MatMul; every adapter file is rewritten to match. Only the stored
weights lose precision: the MatMul still runs on floats, with no quantized activations.

One scale per tensor, symmetric: with one scale per column, onnxruntime's CPU DequantizeLinear
made an active adapter decode much slower, and one per tensor left the quickstart's scores as they
were. The scale input is [1], not a scalar: .onnx_adapter files cannot hold 0-d tensors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from olive_flows.layout import adapter_files
from olive_flows.package.assemble import PackageError

SCALE_SUFFIX = ".scale"
INT8_MAX = 127


def quantize_weights(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each float tensor as int8 plus its scale (``name + SCALE_SUFFIX``, shape [1], same float type);
    other tensors as they are."""
    quantized = {}
    for name, weight in weights.items():
        if not np.issubdtype(weight.dtype, np.floating):  # lora_fusion's split ranks
            quantized[name] = weight
            continue
        peak = float(np.abs(weight).max(initial=0.0))
        scale = np.array([peak / INT8_MAX if peak > 0 else 1.0], dtype=weight.dtype)  # as stored
        values = np.clip(np.rint(weight.astype(np.float32) / scale.astype(np.float32)), -INT8_MAX, INT8_MAX)
        quantized[name] = values.astype(np.int8)
        quantized[name + SCALE_SUFFIX] = scale
    return quantized


def quantize_adapter_file(path: Path) -> None:
    """Rewrite one .onnx_adapter file with int8 weights (see quantize_weights)."""
    from olive.common.utils import load_weights, save_weights

    save_weights(quantize_weights(load_weights(path)), path, "onnx_adapter")


def quantize_graph(model_path: Path) -> int:
    """Make every MatMul weight that is a graph input int8, dequantized in the graph; return how many.

    The base's weights are initializers, not inputs, so only the adapter weights are touched. The
    graph is rewritten without loading external weight data, which stays where it is.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    inputs = {value.name: value for value in graph.input}
    defaults = {init.name: init for init in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in graph.node:
        weight = node.input[1] if node.op_type == "MatMul" else None
        if weight not in inputs:
            nodes.append(node)
            continue
        float_type = inputs[weight].type.tensor_type.elem_type
        scale = weight + SCALE_SUFFIX
        inputs[weight].type.tensor_type.elem_type = onnx.TensorProto.INT8
        graph.input.append(helper.make_tensor_value_info(scale, float_type, [1]))
        if weight in defaults:
            empty = np.zeros(list(defaults[weight].dims), dtype=np.int8)
            defaults[weight].CopyFrom(numpy_helper.from_array(empty, weight))
            one = np.ones([1], dtype=helper.tensor_dtype_to_np_dtype(float_type))
            graph.initializer.append(numpy_helper.from_array(one, scale))
        dequantized = weight + ".dequantized"
        nodes.append(
            helper.make_node("DequantizeLinear", [weight, scale], [dequantized], name=f"{node.name}_dequantize")
        )
        node.input[1] = dequantized
        nodes.append(node)
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    model_path.write_bytes(model.SerializeToString())
    return count


def quantize_package(folder: Path) -> None:
    """Store the LoRA weights of a staged package in int8: its graph and every adapter file."""
    if quantize_graph(folder / "model.onnx") == 0:
        raise PackageError(f"{folder / 'model.onnx'} has no LoRA weight inputs to store in int8")
    for path in adapter_files(folder).values():
        quantize_adapter_file(path)
