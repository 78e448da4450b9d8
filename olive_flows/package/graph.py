"""Operations on an exported base graph: normalize it for sharing, and catch known export traps."""

from __future__ import annotations

from pathlib import Path

QUANTIZED_OPS = {"MatMulNBits", "DequantizeLinear", "QuantizeLinear"}


def _is_lora(name: str) -> bool:
    return "/lora_A/" in name or "/lora_B/" in name


def shared_graph(model_path: Path) -> bytes:
    """The graph (without external data) as it is shipped to be shared by every adapter.

    ModelBuilder records the LoRA rank of the adapter it was given in the value_info of the
    intermediate LoRA outputs. ExtractAdapters makes the rank dynamic in the inputs but leaves these
    hints, so the same base differs between adapters of different rank. The hints are dropped;
    onnxruntime infers those shapes at load time. Olive 0.13's ExtractAdapters also lists every
    LoRA weight input twice, which onnx.checker rejects; each is kept once.
    """
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    kept = [info for info in model.graph.value_info if not _is_lora(info.name)]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    unique = list({value.name: value for value in reversed(model.graph.input)}.values())[::-1]
    del model.graph.input[:]
    model.graph.input.extend(unique)
    return model.SerializeToString(deterministic=True)


def quantized_lora_nodes(model_path: Path) -> list[str]:
    """LoRA MatMul nodes that were quantized: such a base fails with no adapter active."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in QUANTIZED_OPS and _is_lora(n.name)]
