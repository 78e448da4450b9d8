"""Store a package's LoRA weights in 8 bits: adapter files a quarter of their fp32 size.

ExtractAdapters leaves every LoRA MatMul reading its weight from an optional graph input (its
default an empty tensor, rank 0, so the base runs with no adapter active). Here each such input
becomes int8, with a one-element scale input of the float type beside it, and its MatMul becomes
onnxruntime's DynamicQuantizeMatMul: the int8 weight times the activations quantized to 8 bits on
the fly, in one node. Every adapter file is rewritten to match.

One node per LoRA MatMul: a DequantizeLinear in front of a float MatMul ran twice the nodes at
every token, empty ones with no adapter active, and cost an active r=16 adapter on the quickstart
about twice the slowdown against the base (make bench: adapter_r16_slowdown). Rounding the LoRA
path's activations too kept the quickstart's KL divergences to two digits and moved one dates
perplexity by 2e-4.

One scale per tensor, symmetric: with one scale per column, onnxruntime's CPU DequantizeLinear
(an earlier version's) made an active adapter decode much slower, and one per tensor was as exact.
The codes use 7 bits of the 8 (-63..63), what onnxruntime's own quantizer calls reduce_range: on
x86 CPUs without VNNI (AVX2 only, as on many laptops) its u8 x s8 kernel adds pairs of products in
16 bits, and 255 * 127 * 2 overflows them. With codes up to 127 a random weight came back from
DynamicQuantizeMatMul on such a CPU with 16% error (median over 20 draws, up to 42%); with codes up
to 63, 0.75% (tests/test_adapter_weights.py checks this on whatever CPU runs it).
The scale input is [1], not a scalar: .onnx_adapter files cannot hold 0-d tensors.

No LoRA weight is ever empty: DynamicQuantizeMatMul returns garbage for an inner dimension of 0
(seen on onnxruntime 1.32), so the rank-0 defaults become one zero row or column, which adds
exact zeros; lora_fusion.py does the same for the parts of a fused A.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from olive_flows.layout import adapter_files
from olive_flows.package.assemble import PackageError

SCALE_SUFFIX = ".scale"
MICROSOFT = "com.microsoft"  # the domain of onnxruntime's own operators
INT8_MAX = 63  # 7 bits: see the module docstring


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
    """Make every MatMul weight that is a graph input int8, multiplied by DynamicQuantizeMatMul;
    return how many.

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
        if float_type != onnx.TensorProto.FLOAT:  # DynamicQuantizeMatMul takes fp32 activations only
            raise PackageError(f"{model_path}: LoRA weight {weight} is not fp32; int8 adapter weights need fp32")
        scale = weight + SCALE_SUFFIX
        inputs[weight].type.tensor_type.elem_type = onnx.TensorProto.INT8
        graph.input.append(helper.make_tensor_value_info(scale, float_type, [1]))
        if weight in defaults:
            shape = [dim or 1 for dim in defaults[weight].dims]  # rank 0 -> one zero row or column
            defaults[weight].CopyFrom(numpy_helper.from_array(np.zeros(shape, dtype=np.int8), weight))
            graph.initializer.append(numpy_helper.from_array(np.ones([1], dtype=np.float32), scale))
        nodes.append(
            helper.make_node(
                "DynamicQuantizeMatMul",
                [node.input[0], weight, scale],
                list(node.output),
                name=node.name,
                domain=MICROSOFT,
            )
        )
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    if count and not any(opset.domain == MICROSOFT for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MICROSOFT, 1))
    model_path.write_bytes(model.SerializeToString())
    return count


def quantize_package(folder: Path) -> None:
    """Store the LoRA weights of a staged package in int8: its graph and every adapter file."""
    if quantize_graph(folder / "model.onnx") == 0:
        raise PackageError(f"{folder / 'model.onnx'} has no LoRA weight inputs to store in int8")
    for path in adapter_files(folder).values():
        quantize_adapter_file(path)
