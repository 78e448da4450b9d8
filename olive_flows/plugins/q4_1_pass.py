"""An Olive pass that stores MatMul weights as llama.cpp's Q4_1: per block of 32, w = d * q + m.

Q4_1 keeps a float minimum per block (fp16, like its step). ONNX Runtime's MatMulNBits only has
integer zero points on its fast CPU path, so an int4 export re-rounds every block's minimum to the
nearest step and moves the whole block by up to half a step. For weights that are already on a Q4_1 grid (a model converted
from a Q4_1 GGUF, like the built-in SmolLM2) that double rounding cost 24% perplexity (0.21 nats of
loss per token: bench/parity_bounds.json, k_quant_mixed); this pass keeps them exact. The MatMuls
that read the same input (q/k/v, gate/up, or one alone) become

    MatMulNBits(x, [q | 1], [d | 1])  4-bit codes of every MatMul side by side, plus one column per
                                      block that sums x over it (symmetric kernel, zero point 8)
    + sums @ (m + 8 d)                the block offsets: one float per block and output column

and a Split back to each MatMul's output. The offsets MatMul and its Add still cost a 135M model
about a sixth of its decode speed (less on larger ones): it is a single-threaded fp32 GEMV over as
many bytes as the scales. The nodes in ``int8_nodes`` (the LM head) get llama.cpp's Q8_0: 8-bit
symmetric blocks with an fp16 step (``q8_0_blocks``), on MatMulNBits' implicit zero point, the
steps cast to fp32 at load. A tied embedding (its table the LM head's weight transposed, as in
SmolLM2) then reads the LM head's 8-bit blocks through GatherBlockQuantized instead of keeping its
own float table: the quickstart's base model went from 230 MB to 117 MB, and storing the Q4_1 steps
and minima in fp16 (``_fp32_at_load``) took it to 104 MB. SmolLM2's tied table is the GGUF's Q8_0
embedding, so Q8_0 blocks hold it exactly: with onnxruntime's asymmetric 8-bit round-to-nearest
before (a float scale and a zero point per block, re-rounding every weight) the quickstart's base
was 104.0 MB with an ONNX perplexity of 2.7449 against PyTorch's 2.7293 (loss per token 0.0057
nats above PyTorch's); with Q8_0, 101.4 MB and 2.7306 (0.0005 nats), on the same 2-core AVX2 host.
Olive cannot load a pass from a workflow config, so olive-flows hands Olive a package config that
names this module (``package_config()`` in plugins/__init__.py, written next to the compiled configs
for ``olive run``).
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
from onnx import TensorProto, helper, numpy_helper

LEVELS = 15  # 4 bits
# Part of the pass config, so Olive's cache (keyed on pass configs, not code) never returns a graph
# an older version of this pass wrote. Bump it when the output graph changes.
GRAPH_VERSION = 7
IMPLICIT_ZERO = 8  # MatMulNBits' zero point when the model gives none
Q8_LEVELS, Q8_ZERO = 127, 128  # Q8_0 codes, and MatMulNBits' implicit zero point at 8 bits


def q4_1_blocks(weight: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_1 of a (K, N) MatMul weight along K: codes (N, K/block, block) in 0..15, steps d and
    minima m (N, K/block) in fp16 as a GGUF block holds them, such that weight[k, n] = d * code + m.
    The codes are rounded against the fp16 step and minimum, so a weight already on a Q4_1 grid
    comes back exactly."""
    k, n = weight.shape
    blocks = weight.T.reshape(n, k // block_size, block_size).astype(np.float64)
    low = blocks.min(-1).astype(np.float16)
    step = ((blocks.max(-1) - low) / LEVELS).astype(np.float16)
    safe = np.where(step == 0, 1.0, step.astype(np.float64))
    codes = np.clip(np.rint((blocks - low[..., None]) / safe[..., None]), 0, LEVELS).astype(np.uint8)
    return codes, step, low


def _sum_columns(k: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes and steps of K/block extra output columns that sum ``x`` over each block: column j
    weighs the inputs of block j by 1 (code 9 against the implicit zero point 8) and the rest by 0.
    Sums taken inside MatMulNBits are sums of the activations the kernel actually multiplied (int8
    at accuracy_level 4), so the offsets meet the same activations as the codes: Q4_1 weights times
    quantized activations, as llama.cpp's Q4_1 x Q8_1 dot product computes."""
    blocks = k // block_size
    codes = np.full((blocks, blocks, block_size), IMPLICIT_ZERO, np.uint8)
    codes[np.arange(blocks), np.arange(blocks)] = IMPLICIT_ZERO + 1
    return codes, np.ones((blocks, blocks), np.float16)


def _q4_1_group(
    x: str, group: list[tuple[onnx.NodeProto, np.ndarray]], block_size: int, accuracy_level: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes and initializers that replace the MatMuls of ``group`` (all reading ``x``, each with
    its (K, N) weight) by one MatMulNBits, keeping each MatMul's output name. Per input: one
    MatMulNBits, a Split, one offsets MatMul and an Add (and a Split back to the MatMuls), where
    one kernel and offsets per MatMul plus a Reshape and ReduceSum for the sums decoded the
    quickstart package about 5% slower."""
    k = group[0][1].shape[0]
    blocks = k // block_size
    codes, steps, minima = [], [], []
    for _, weight in group:
        code, step, low = q4_1_blocks(weight, block_size)
        codes.append(code)
        steps.append(step)
        minima.append(low.T)
    sum_codes, sum_steps = _sum_columns(k, block_size)
    codes, steps = np.concatenate([*codes, sum_codes]), np.concatenate([*steps, sum_steps])
    widths = [weight.shape[1] for _, weight in group]
    n = sum(widths)
    name = group[0][0].name if len(group) == 1 else f"{x}_packed"
    initializers = [
        numpy_helper.from_array(codes[..., 0::2] | (codes[..., 1::2] << 4), f"{name}_Q4_1_codes"),
        numpy_helper.from_array(steps, f"{name}_Q4_1_scales_fp16"),
        numpy_helper.from_array(np.concatenate(minima, axis=1), f"{name}_Q4_1_minima_fp16"),
        numpy_helper.from_array(np.array([n, blocks], np.int64), f"{name}_Q4_1_split"),
        numpy_helper.from_array(np.array([0], np.int64), f"{name}_Q4_1_first"),
        numpy_helper.from_array(np.array([n], np.int64), f"{name}_Q4_1_n"),
        numpy_helper.from_array(np.array(IMPLICIT_ZERO, np.float32), f"{name}_Q4_1_zero"),
    ]
    packed, sums, offset = f"{name}_Q4_1_out", f"{name}_Q4_1_sums", f"{name}_Q4_1_offset"
    total = group[0][0].output[0] if len(group) == 1 else f"{name}_Q4_1_total"
    nodes = [
        *_fp32_at_load(name),
        helper.make_node(
            "MatMulNBits",
            [x, f"{name}_Q4_1_codes", f"{name}_Q4_1_scales"],
            [f"{packed}_all"],
            name=f"{name}_Q4_1",
            domain="com.microsoft",
            K=k,
            N=n + blocks,
            bits=4,
            block_size=block_size,
            accuracy_level=accuracy_level,
        ),
        helper.make_node(
            "Split", [f"{packed}_all", f"{name}_Q4_1_split"], [packed, sums], name=f"{name}_Q4_1_sums", axis=-1
        ),
        helper.make_node("MatMul", [sums, f"{name}_Q4_1_offsets"], [offset], name=f"{name}_Q4_1_offsets"),
        helper.make_node("Add", [packed, offset], [total], name=f"{name}_Q4_1_add"),
    ]
    if len(group) > 1:
        initializers.append(numpy_helper.from_array(np.array(widths, np.int64), f"{name}_Q4_1_widths"))
        outputs = [node.output[0] for node, _ in group]
        nodes.append(
            helper.make_node("Split", [total, f"{name}_Q4_1_widths"], outputs, name=f"{name}_Q4_1_unpack", axis=-1)
        )
    return nodes, initializers


def _fp32_at_load(name: str) -> list[onnx.NodeProto]:
    """Constant nodes that onnxruntime folds when it loads the model: the fp32 scales MatMulNBits
    takes (in the activations' type) from the stored fp16 ones, and the offsets m + 8 d per block
    and output column from the fp16 minima and steps. The file holds each block's step and minimum
    in fp16, as the GGUF does, instead of fp32 (the quickstart's base model: 117 MB to 104 MB);
    the folded values are those an fp32 file held, so the kernels run as before."""
    q = f"{name}_Q4_1"
    return [
        helper.make_node("Cast", [f"{q}_scales_fp16"], [f"{q}_scales"], name=f"{q}_scales", to=TensorProto.FLOAT),
        helper.make_node("Slice", [f"{q}_scales", f"{q}_first", f"{q}_n"], [f"{q}_steps"], name=f"{q}_steps"),
        helper.make_node("Transpose", [f"{q}_steps"], [f"{q}_steps_t"], name=f"{q}_steps_t", perm=[1, 0]),
        helper.make_node("Mul", [f"{q}_steps_t", f"{q}_zero"], [f"{q}_shift"], name=f"{q}_shift"),
        helper.make_node("Cast", [f"{q}_minima_fp16"], [f"{q}_minima"], name=f"{q}_minima", to=TensorProto.FLOAT),
        helper.make_node("Add", [f"{q}_minima", f"{q}_shift"], [f"{q}_offsets"], name=f"{q}_offsets_at_load"),
    ]


def quantize_q4_1(
    model: onnx.ModelProto, block_size: int, accuracy_level: int, exclude: set[str], int8_nodes: set[str]
) -> onnx.ModelProto:
    """Q4_1 for every MatMul with a constant 2-D weight, except ``exclude``; 8 bits for ``int8_nodes``."""
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    uses = Counter(name for node in graph.node for name in node.input)
    groups: dict[str, list[tuple[onnx.NodeProto, np.ndarray]]] = {}
    for node in graph.node:
        init = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if init is None or node.name in exclude or node.name in int8_nodes or len(init.dims) != 2:
            continue
        if uses[init.name] > 1:  # a shared weight keeps its float copy for its other users
            continue
        k, n = init.dims
        if k == 0 or n == 0 or k % block_size:
            continue
        groups.setdefault(node.input[0], []).append((node, numpy_helper.to_array(init)))
        graph.initializer.remove(init)
    if groups:
        # Each group's nodes go where its first MatMul was: they read only its input and constants.
        replaced: dict[str, list[onnx.NodeProto]] = {}
        for x, group in groups.items():
            nodes, initializers = _q4_1_group(x, group, block_size, accuracy_level)
            replaced[group[0][0].name] = nodes
            replaced.update((node.name, []) for node, _ in group[1:])
            graph.initializer.extend(initializers)
        nodes = [new for node in graph.node for new in replaced.get(node.name, [node])]
        del graph.node[:]
        graph.node.extend(nodes)
    tied = _tied_embedding(graph, int8_nodes)
    for node in [n for n in graph.node if n.op_type == "MatMul" and n.name in int8_nodes]:
        _q8_0(graph, node, block_size, accuracy_level)
    if tied:
        _gather_from_head(graph, *tied)
    if any(node.domain == "com.microsoft" for node in graph.node) and not any(
        op.domain == "com.microsoft" for op in model.opset_import
    ):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def q8_0_blocks(weight: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """llama.cpp's Q8_0 of a (K, N) MatMul weight along K: codes (N, K/block, block) as MatMulNBits'
    8-bit layout holds them (q + 128, its implicit zero point) and fp16 steps d (N, K/block), such
    that weight[k, n] = d * q with q in -127..127. A weight already on a Q8_0 grid (the GGUF's tied
    embedding) comes back exactly: its largest code is 127, so its step is its largest value / 127."""
    k, n = weight.shape
    blocks = weight.T.reshape(n, k // block_size, block_size).astype(np.float64)
    step = (np.abs(blocks).max(-1) / Q8_LEVELS).astype(np.float16)
    safe = np.where(step == 0, 1.0, step.astype(np.float64))
    codes = np.clip(np.rint(blocks / safe[..., None]), -Q8_LEVELS, Q8_LEVELS) + Q8_ZERO
    return codes.astype(np.uint8), step


def _q8_0(graph: onnx.GraphProto, node: onnx.NodeProto, block_size: int, accuracy_level: int) -> None:
    """Replace ``node`` (a MatMul by a constant (K, N) weight) in place by an 8-bit MatMulNBits on
    its Q8_0 blocks, the steps stored in fp16 and cast at load, keeping its output name; a weight
    whose K is not a multiple of ``block_size`` stays float."""
    weights = {init.name: init for init in graph.initializer}
    init = weights.get(node.input[1])
    if init is None or len(init.dims) != 2 or init.dims[0] % block_size:
        return
    k, n = init.dims
    codes, steps = q8_0_blocks(numpy_helper.to_array(init), block_size)
    name = f"{node.name}_Q8"
    graph.initializer.extend(
        [numpy_helper.from_array(codes, f"{name}_codes"), numpy_helper.from_array(steps, f"{name}_scales_fp16")]
    )
    cast = helper.make_node(
        "Cast", [f"{name}_scales_fp16"], [f"{name}_scales"], name=f"{name}_scales", to=TensorProto.FLOAT
    )
    matmul = helper.make_node(
        "MatMulNBits",
        [node.input[0], f"{name}_codes", f"{name}_scales"],
        list(node.output),
        name=name,
        domain="com.microsoft",
        K=k,
        N=n,
        bits=8,
        block_size=block_size,
        accuracy_level=accuracy_level,
    )
    # The cast goes first: a tied embedding's GatherBlockQuantized, near the start, reads the steps too.
    rewritten = [cast, *(matmul if old.name == node.name else old for old in graph.node)]
    del graph.node[:]
    graph.node.extend(rewritten)
    if not any(init.name in other.input for other in graph.node):
        graph.initializer.remove(init)


def _tied_embedding(graph: onnx.GraphProto, int8_nodes: set[str]) -> tuple[onnx.NodeProto, str] | None:
    """The embedding Gather whose float table is the transpose of the weight of one of ``int8_nodes``
    (a tied LM head), and that MatMul's output name; None when there is none."""
    weights = {init.name: init for init in graph.initializer}
    heads = [n for n in graph.node if n.op_type == "MatMul" and n.name in int8_nodes and n.input[1] in weights]
    for node in graph.node:
        table = weights.get(node.input[0]) if node.op_type == "Gather" else None
        if table is None or len(table.dims) != 2:
            continue
        for head in heads:
            weight = weights[head.input[1]]
            if list(weight.dims) == list(table.dims)[::-1] and np.array_equal(
                numpy_helper.to_array(weight).T, numpy_helper.to_array(table)
            ):
                return node, head.output[0]
    return None


def _gather_from_head(graph: onnx.GraphProto, gather: onnx.NodeProto, head_output: str) -> None:
    """Replace ``gather`` and its float table by a GatherBlockQuantized over the blocks of the 8-bit
    MatMulNBits that writes ``head_output``: its codes (N, K/block, block) as they are, its scales and
    zero points reshaped to (N, K/block, 1), and the rows gathered reshaped back to (..., K)."""
    head = next(n for n in graph.node if n.op_type == "MatMulNBits" and n.output[0] == head_output)
    attributes = {a.name: helper.get_attribute_value(a) for a in head.attribute}
    k, block_size = attributes["K"], attributes["block_size"]
    name = gather.name
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([0, 0, 1], np.int64), f"{name}_block_shape"),
            numpy_helper.from_array(np.array([0, 0, k], np.int64), f"{name}_row_shape"),
        ]
    )
    quantized = [head.input[1], gather.input[1]]
    nodes = []
    for part in head.input[2:4]:  # scales, and zero points when the head has them
        if part:
            nodes.append(
                helper.make_node("Reshape", [part, f"{name}_block_shape"], [f"{part}_blocks"], name=f"{name}/{part}")
            )
            quantized.append(f"{part}_blocks")
    nodes += [
        helper.make_node(
            "GatherBlockQuantized",
            quantized,
            [f"{name}_blocks"],
            name=f"{name}_quantized",
            domain="com.microsoft",
            gather_axis=0,
            quantize_axis=2,
            block_size=block_size,
            bits=attributes["bits"],
        ),
        helper.make_node("Reshape", [f"{name}_blocks", f"{name}_row_shape"], [gather.output[0]], name=f"{name}_rows"),
    ]
    table = next(init for init in graph.initializer if init.name == gather.input[0])
    rewritten = [new for node in graph.node for new in (nodes if node.name == name else [node])]
    del graph.node[:]
    graph.node.extend(rewritten)
    if not any(table.name in node.input for node in graph.node):
        graph.initializer.remove(table)


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
                type_=list, default_value=[], description="MatMuls quantized to Q8_0 instead (the LM head)."
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
