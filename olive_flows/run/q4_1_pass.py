"""An Olive pass that stores MatMul weights as llama.cpp's Q4_1: per block of 32, w = d * q + m.

Q4_1 keeps a float minimum per block. ONNX Runtime's MatMulNBits only has integer zero points on its
fast CPU path, so an int4 export re-rounds every block's minimum to the nearest step and moves the
whole block by up to half a step. For weights that are already on a Q4_1 grid (a model converted
from a Q4_1 GGUF, like the built-in SmolLM2) that double rounding cost 24% perplexity; this pass
keeps them exact. Each MatMul becomes

    MatMulNBits(x, q, d)            the 4-bit part, symmetric kernel (implicit zero point 8)
    + ReduceSum_32(x) @ (m + 8 d)   the block offsets: one float per block and output column

The block sums are computed once per input (q/k/v and gate/up share theirs); the offsets still cost
one small MatMul and an Add per projection (a fifth to a quarter of decode speed on a 135M model,
less on larger ones). The nodes in ``int8_nodes`` (the LM head) get 8-bit round-to-nearest
through onnxruntime's MatMulNBitsQuantizer, which keeps the graph's output names. Olive cannot load
a pass from a workflow config, so olive-flows hands Olive a package config that names this module
(``package_config()`` in run/olive.py, written next to the compiled configs for ``olive run``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from olive.model import ONNXModelHandler
from olive.model.utils import resolve_onnx_path
from olive.passes import Pass
from olive.passes.onnx.common import get_external_data_config, model_proto_to_olive_model
from olive.passes.pass_config import BasePassConfig, PassConfigParam
from onnx import helper, numpy_helper

LEVELS = 15  # 4 bits
# Part of the pass config, so Olive's cache (keyed on pass configs, not code) never returns a graph
# an older version of this pass wrote. Bump it when the output graph changes.
GRAPH_VERSION = 2
IMPLICIT_ZERO = 8  # MatMulNBits' zero point when the model gives none


def q4_1_blocks(weight: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_1 of a (K, N) MatMul weight along K: codes (N, K/block, block) in 0..15, steps d and
    minima m (N, K/block), such that weight[k, n] = d * code + m."""
    k, n = weight.shape
    blocks = weight.T.reshape(n, k // block_size, block_size).astype(np.float64)
    low, high = blocks.min(-1), blocks.max(-1)
    step = (high - low) / LEVELS
    safe = np.where(step == 0, 1.0, step)
    codes = np.clip(np.rint((blocks - low[..., None]) / safe[..., None]), 0, LEVELS).astype(np.uint8)
    return codes, step.astype(np.float32), low.astype(np.float32)


def _block_sums(x: str, k: int, block_size: int) -> tuple[str, list[onnx.NodeProto], onnx.TensorProto]:
    """Sums of ``x`` (batch, sequence, K as in ModelBuilder's graphs) over each block of ``block_size``
    along K: the tensor's name, the nodes and the Reshape's shape. Computed once per input: q/k/v
    (and gate/up) share theirs."""
    sums, shape = f"{x}_q4_1_sums", f"q4_1_blocks_{k}"
    nodes = [
        helper.make_node("Reshape", [x, shape], [f"{x}_q4_1_blocks"], name=f"{x}_q4_1_blocks"),
        helper.make_node("ReduceSum", [f"{x}_q4_1_blocks", "q4_1_last_axis"], [sums], name=sums, keepdims=0),
    ]
    return sums, nodes, numpy_helper.from_array(np.array([0, 0, k // block_size, block_size], np.int64), shape)


def _q4_1_nodes(node: onnx.NodeProto, weight: np.ndarray, block_size: int, accuracy_level: int, sums: str):
    """The nodes and initializers that replace ``node`` (x @ weight) with the same output name."""
    k, n = weight.shape
    codes, step, low = q4_1_blocks(weight, block_size)
    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
    name, out, prefix = node.name, node.output[0], node.input[1]
    initializers = [
        numpy_helper.from_array(packed, f"{prefix}_Q4_1"),
        numpy_helper.from_array(step, f"{prefix}_scales"),
        numpy_helper.from_array((low + IMPLICIT_ZERO * step).T.copy(), f"{prefix}_offsets"),
    ]
    nodes = [
        helper.make_node(
            "MatMulNBits",
            [node.input[0], f"{prefix}_Q4_1", f"{prefix}_scales"],
            [f"{out}_q4"],
            name=f"{name}_Q4_1",
            domain="com.microsoft",
            K=k,
            N=n,
            bits=4,
            block_size=block_size,
            accuracy_level=accuracy_level,
        ),
        helper.make_node("MatMul", [sums, f"{prefix}_offsets"], [f"{out}_offsets"], name=f"{name}_offsets"),
        helper.make_node("Add", [f"{out}_q4", f"{out}_offsets"], [out], name=f"{name}_Q4_1_add"),
    ]
    return nodes, initializers


def quantize_q4_1(
    model: onnx.ModelProto, block_size: int, accuracy_level: int, exclude: set[str], int8_nodes: set[str]
) -> onnx.ModelProto:
    """Q4_1 for every MatMul with a constant 2-D weight, except ``exclude``; 8 bits for ``int8_nodes``."""
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    uses = Counter(name for node in graph.node for name in node.input)
    replaced: dict[str, list[onnx.NodeProto]] = {}
    sums_of: dict[str, str] = {}
    for node in graph.node:
        init = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if init is None or node.name in exclude or node.name in int8_nodes or len(init.dims) != 2:
            continue
        if uses[init.name] > 1:  # a shared weight keeps its float copy for its other users
            continue
        k, n = init.dims
        if k == 0 or n == 0 or k % block_size:
            continue
        replaced[node.name] = []
        if node.input[0] not in sums_of:
            sums_of[node.input[0]], replaced[node.name], shape = _block_sums(node.input[0], k, block_size)
            if shape.name not in weights:
                graph.initializer.append(shape)
                weights[shape.name] = shape
        nodes, initializers = _q4_1_nodes(
            node, numpy_helper.to_array(init), block_size, accuracy_level, sums_of[node.input[0]]
        )
        replaced[node.name] += nodes
        graph.initializer.remove(init)
        graph.initializer.extend(initializers)
    if replaced:
        graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "q4_1_last_axis"))
        nodes = [new for node in graph.node for new in replaced.get(node.name, [node])]
        del graph.node[:]
        graph.node.extend(nodes)
        if not any(op.domain == "com.microsoft" for op in model.opset_import):
            model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    if int8_nodes:
        from onnxruntime.quantization import QuantFormat
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )

        others = [node.name for node in graph.node if node.op_type == "MatMul" and node.name not in int8_nodes]
        algo = DefaultWeightOnlyQuantConfig(
            block_size=block_size,
            is_symmetric=False,
            accuracy_level=accuracy_level,
            quant_format=QuantFormat.QOperator,
            op_types_to_quantize=("MatMul",),
            quant_axes=None,
            bits=8,
        )
        quantizer = MatMulNBitsQuantizer(
            model, nodes_to_exclude=others, accuracy_level=accuracy_level, algo_config=algo
        )
        quantizer.process()
        model = quantizer.model.model
    return model


class OnnxQ41Quantization(Pass):
    """Q4_1 int4 weights (float block minima kept exactly), 8 bits for the nodes in ``int8_nodes``."""

    @classmethod
    def _default_config(cls, accelerator_spec: Any) -> dict[str, PassConfigParam]:
        return {
            "block_size": PassConfigParam(type_=int, default_value=32, description="Weights per block along K."),
            "accuracy_level": PassConfigParam(
                type_=int, default_value=4, description="MatMulNBits accuracy_level (4: int8 activations on CPU)."
            ),
            "nodes_to_exclude": PassConfigParam(
                type_=list, default_value=[], description="MatMuls left in float (the LoRA MatMuls)."
            ),
            "int8_nodes": PassConfigParam(
                type_=list, default_value=[], description="MatMuls quantized to 8 bits instead (the LM head)."
            ),
            "graph_version": PassConfigParam(
                type_=int, default_value=GRAPH_VERSION, description="Version of the graph this pass writes."
            ),
            **get_external_data_config(),
        }

    def _run_for_config(
        self, model: ONNXModelHandler, config: type[BasePassConfig], output_model_path: str
    ) -> ONNXModelHandler:
        output_model_path = resolve_onnx_path(output_model_path, Path(model.model_path).name)
        quantized = quantize_q4_1(
            model.load_model(),
            config.block_size,
            config.accuracy_level,
            set(config.nodes_to_exclude),
            set(config.int8_nodes),
        )
        return model_proto_to_olive_model(quantized, output_model_path, config)
