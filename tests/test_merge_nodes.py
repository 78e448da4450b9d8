"""The package step's node merges (package/merge_nodes.py), run by onnxruntime: the attention reads
the packed q/k/v projection and chained float Adds become one Sum, with the same outputs bit for bit;
what the rewrites cannot prove safe stays as it was."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from olive_flows.package.merge_nodes import merge_graph

HEADS, KV_HEADS, HEAD = 2, 1, 8
Q, KV = HEADS * HEAD, KV_HEADS * HEAD


def attention_graph(path, widths=(Q, KV, KV), split_read_twice: bool = False) -> None:
    """x -> one packed MatMul -> Split into q, k, v -> GroupQueryAttention -> o projection, plus the
    Q4_1 shape of a projection with an adapter: Add(Add(codes, x @ offsets), lora) and an integer
    chain of Adds beside it."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w_qkv"], ["qkv"], name="/qkv/MatMul"),
        helper.make_node("Split", ["qkv", "widths"], ["q", "k", "v"], name="/qkv/Split", axis=-1),
        helper.make_node(
            "GroupQueryAttention",
            ["q", "k", "v", "past_key", "past_value", "seqlens_k", "total_length"],
            ["attn", "present_key", "present_value"],
            name="/attn/GroupQueryAttention",
            domain="com.microsoft",
            num_heads=HEADS,
            kv_num_heads=KV_HEADS,
        ),
        helper.make_node("MatMul", ["attn", "w_o"], ["codes"], name="/o/MatMul"),
        helper.make_node("MatMul", ["x", "offsets"], ["offset"], name="/o/offsets"),
        helper.make_node("Add", ["codes", "offset"], ["total"], name="/o/Q4_1_add"),
        helper.make_node("Add", ["total", "lora"], ["y"], name="/o/lora/Add"),
        helper.make_node("Add", ["count", "count"], ["twice"], name="/int/Add"),
        helper.make_node("Add", ["twice", "count"], ["thrice"], name="/int/Add2"),
    ]
    if split_read_twice:
        nodes.append(helper.make_node("Identity", ["k"], ["k_too"], name="/k/Identity"))
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, Q]),
        helper.make_tensor_value_info("past_key", TensorProto.FLOAT, [1, KV_HEADS, 0, HEAD]),
        helper.make_tensor_value_info("past_value", TensorProto.FLOAT, [1, KV_HEADS, 0, HEAD]),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
        helper.make_tensor_value_info("total_length", TensorProto.INT32, []),
        helper.make_tensor_value_info("lora", TensorProto.FLOAT, [1, 3, Q]),
        helper.make_tensor_value_info("count", TensorProto.INT64, [2]),
    ]
    weights = [
        numpy_helper.from_array(rng.standard_normal((Q, Q + 2 * KV)).astype(np.float32), "w_qkv"),
        numpy_helper.from_array(np.array(widths, np.int64), "widths"),
        numpy_helper.from_array(rng.standard_normal((Q, Q)).astype(np.float32), "w_o"),
        numpy_helper.from_array(rng.standard_normal((Q, Q)).astype(np.float32), "offsets"),
    ]
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("present_key", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("thrice", TensorProto.INT64, None),
    ]
    if split_read_twice:
        outputs.append(helper.make_tensor_value_info("k_too", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "attention", inputs, outputs, weights)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=10), path)


def run(path) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    feeds = {
        "x": rng.standard_normal((1, 3, Q)).astype(np.float32),
        "past_key": np.zeros((1, KV_HEADS, 0, HEAD), np.float32),
        "past_value": np.zeros((1, KV_HEADS, 0, HEAD), np.float32),
        "seqlens_k": np.array([2], np.int32),
        "total_length": np.array(3, np.int32),
        "lora": rng.standard_normal((1, 3, Q)).astype(np.float32),
        "count": np.array([1, 2], np.int64),
    }
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def op_types(path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


def test_the_attention_reads_the_packed_projection_and_float_adds_become_one_sum(tmp_path):
    path = tmp_path / "model.onnx"
    attention_graph(path)
    before = run(path)
    assert merge_graph(path) == {"packed_attention": 1, "sums": 1}
    graph = onnx.load(str(path)).graph
    attention = next(node for node in graph.node if node.op_type == "GroupQueryAttention")
    assert list(attention.input[:3]) == ["qkv", "", ""]
    assert "Split" not in op_types(path)
    assert next(node for node in graph.node if node.output[0] == "y").input == ["codes", "offset", "lora"]
    assert op_types(path).count("Add") == 2, "the integer Adds stay: onnxruntime's Sum is float only"
    for was, now in zip(before, run(path), strict=True):
        np.testing.assert_array_equal(was, now)
    assert merge_graph(path) == {"packed_attention": 0, "sums": 0}, "nothing left to merge"


def test_a_split_that_is_not_exactly_the_attention_s_inputs_stays(tmp_path):
    read_twice, other_widths = tmp_path / "read_twice.onnx", tmp_path / "widths.onnx"
    attention_graph(read_twice, split_read_twice=True)
    attention_graph(other_widths, widths=(KV, Q, KV))
    assert merge_graph(read_twice)["packed_attention"] == 0, "another node reads the key"
    assert merge_graph(other_widths)["packed_attention"] == 0, "widths that are not q, k, v"
    assert "Split" in op_types(read_twice) and "Split" in op_types(other_widths)
