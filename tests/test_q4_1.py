"""The Q4_1 pass on one-MatMul graphs run by onnxruntime: exact on Q4_1 weights, output names kept."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from olive_flows.plugins import package_config
from olive_flows.plugins.q4_1_pass import q8_0_blocks, quantize_q4_1

K, N, BLOCK = 64, 48, 32
rng = np.random.default_rng(0)


def q4_1_grid_weight() -> np.ndarray:
    """A (K, N) weight as a Q4_1 GGUF dequantizes it: per block of 32 along K, m + d * code, with
    the step d and the minimum m in fp16."""
    codes = rng.integers(0, 16, size=(N, K // BLOCK, BLOCK))
    codes[..., 0], codes[..., 1] = 0, 15  # llama.cpp maps each block's min to 0 and max to 15
    step = rng.uniform(0.01, 0.05, size=(N, K // BLOCK, 1)).astype(np.float16).astype(np.float32)
    low = rng.uniform(-0.4, 0.0, size=(N, K // BLOCK, 1)).astype(np.float16).astype(np.float32)
    return (low + step * codes).reshape(N, K).T.astype(np.float32)


def q8_0_grid_weight(k: int, n: int) -> np.ndarray:
    """A (k, n) weight as a Q8_0 GGUF dequantizes it: per block of 32 along k, d * q with the step d
    in fp16 and q in -127..127, each block's largest |q| 127 (llama.cpp's d is the block's max / 127)."""
    codes = rng.integers(-127, 128, size=(n, k // BLOCK, BLOCK))
    codes[..., 0] = rng.choice([-127, 127], size=(n, k // BLOCK))
    step = rng.uniform(1e-4, 1e-2, size=(n, k // BLOCK, 1)).astype(np.float16).astype(np.float32)
    return (step * codes).reshape(n, k).T.astype(np.float32)


def two_matmul_model(w1: np.ndarray, w2: np.ndarray) -> onnx.ModelProto:
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="/body/MatMul"),
        helper.make_node("MatMul", ["h", "w2"], ["logits"], name="/lm_head/MatMul"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "s", K])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "s", N])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"x": x})[0]


def test_q4_1_weights_survive_exactly_and_the_lm_head_goes_to_8_bits():
    w1, w2 = q4_1_grid_weight(), rng.normal(0, 0.05, size=(N, N)).astype(np.float32)
    w2 = np.concatenate([w2, w2[:16]])  # K of the head must be a multiple of the block
    w1 = np.concatenate([w1, q4_1_grid_weight()[:, :16]], axis=1)
    model = two_matmul_model(w1, w2)
    x = rng.normal(size=(1, 3, K)).astype(np.float32)
    expected = run(model, x)

    body_only = quantize_q4_1(onnx.load_from_string(model.SerializeToString()), BLOCK, 1, {"/lm_head/MatMul"}, set())
    ops = [n.op_type for n in body_only.graph.node]
    assert ops.count("MatMulNBits") == 1 and ops[-1] == "MatMul", "the excluded head stays float"
    np.testing.assert_allclose(run(body_only, x), expected, rtol=1e-4, atol=1e-5)

    both = quantize_q4_1(model, BLOCK, 4, set(), {"/lm_head/MatMul"})
    bits = {
        n.name: next(a.i for a in n.attribute if a.name == "bits")
        for n in both.graph.node
        if n.op_type == "MatMulNBits"
    }
    assert bits == {"/body/MatMul_Q4_1": 4, "/lm_head/MatMul_Q8": 8}
    assert [o.name for o in both.graph.output] == ["logits"]
    np.testing.assert_allclose(run(both, x), expected, rtol=0.05, atol=0.02)


def test_q8_0_weights_survive_exactly_in_the_8_bit_lm_head():
    """The LM head goes to Q8_0 blocks that hold a Q8_0 grid weight (SmolLM2's tied GGUF embedding)
    exactly: the codes and fp16 steps give back every weight, and the head computes what the float
    MatMul does but for int8 activations (exact at accuracy_level 1)."""
    weight = q8_0_grid_weight(K, N)
    codes, steps = q8_0_blocks(weight, BLOCK)
    back = (codes.astype(np.float32) - 128) * steps.astype(np.float32)[..., None]
    np.testing.assert_array_equal(back.reshape(N, K).T, weight)
    model = two_matmul_model(np.eye(K, dtype=np.float32), weight)
    x = rng.normal(size=(1, 3, K)).astype(np.float32)
    exact = quantize_q4_1(
        onnx.load_from_string(model.SerializeToString()), BLOCK, 1, {"/body/MatMul"}, {"/lm_head/MatMul"}
    )
    stored = {i.name: i.data_type for i in exact.graph.initializer if i.name.startswith("/lm_head/")}
    assert stored == {
        "/lm_head/MatMul_Q8_codes": TensorProto.UINT8,
        "/lm_head/MatMul_Q8_scales_fp16": TensorProto.FLOAT16,
    }
    np.testing.assert_allclose(run(exact, x), run(model, x), rtol=1e-5, atol=1e-6)


def test_q4_1_is_closer_than_symmetric_rounding_on_ordinary_weights():
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    w1, w2 = rng.normal(0.02, 0.05, size=(K, N)).astype(np.float32), np.eye(N, dtype=np.float32)
    model = two_matmul_model(w1, w2)
    x = rng.normal(size=(1, 8, K)).astype(np.float32)
    expected = run(model, x)
    q4_1 = quantize_q4_1(onnx.load_from_string(model.SerializeToString()), BLOCK, 1, {"/lm_head/MatMul"}, set())
    rtn = MatMulNBitsQuantizer(
        model, block_size=BLOCK, is_symmetric=True, accuracy_level=1, nodes_to_exclude=["/lm_head/MatMul"]
    )
    rtn.process()
    error = {name: np.abs(run(m, x) - expected).mean() for name, m in (("q4_1", q4_1), ("rtn", rtn.model.model))}
    assert 0 < error["q4_1"] < error["rtn"]


def test_olive_loads_the_pass_from_the_package_config():
    from olive.package_config import OlivePackageConfig

    config = OlivePackageConfig.parse_file_or_obj(package_config())
    assert config.import_pass_module("OnnxQ41Quantization").__name__ == "OnnxQ41Quantization"
    assert config.import_pass_module("ModelBuilder").__name__ == "ModelBuilder", "Olive's own passes stay"


def test_matmuls_sharing_an_input_become_one_kernel_with_the_same_outputs():
    """q/k/v-like MatMuls of one input pack into one MatMulNBits (block sums included), split back
    to their own output names; exact at accuracy_level 1, near at 4 (int8 activations)."""
    widths = (48, 16, 16)
    weights = [q4_1_grid_weight()[:, :width] for width in widths]
    nodes = [helper.make_node("MatMul", ["x", f"w{i}"], [f"y{i}"], name=f"/proj{i}/MatMul") for i in range(3)]
    nodes.append(helper.make_node("Concat", ["y0", "y1", "y2"], ["logits"], name="concat", axis=-1))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", K])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "s", sum(widths)])],
        [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    x = rng.normal(size=(2, 5, K)).astype(np.float32)
    expected = run(model, x)

    exact = quantize_q4_1(onnx.load_from_string(model.SerializeToString()), BLOCK, 1, set(), set())
    assert [n.op_type for n in exact.graph.node].count("MatMulNBits") == 1
    assert "MatMul" in [n.op_type for n in exact.graph.node], "the block offsets"
    np.testing.assert_allclose(run(exact, x), expected, rtol=1e-4, atol=1e-5)
    fast = run(quantize_q4_1(model, BLOCK, 4, set(), set()), x)
    assert np.abs(fast - expected).mean() < 0.01 * np.abs(expected).mean(), "int8 activations: about 0.5%"


def tied_model(tied: bool) -> onnx.ModelProto:
    """Embedding -> MatMul -> LM head, the head's weight the table transposed when ``tied``."""
    table = q8_0_grid_weight(K, N).T.copy()  # as SmolLM2's GGUF embedding
    head = table.T.copy() if tied else rng.normal(0, 0.05, size=(K, N)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["embedded"], name="/model/embed_tokens/Gather"),
        helper.make_node("MatMul", ["embedded", "body"], ["h"], name="/body/MatMul"),
        helper.make_node("MatMul", ["h", "head"], ["logits"], name="/lm_head/MatMul"),
    ]
    weights = {"table": table, "body": np.eye(K, dtype=np.float32), "head": head}
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, "s"])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "s", N]),
            helper.make_tensor_value_info("embedded", TensorProto.FLOAT, [1, "s", K]),
        ],
        [numpy_helper.from_array(array, name) for name, array in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_a_tied_embedding_reads_the_8_bit_lm_head():
    """A tied embedding loses its float table and gathers the LM head's Q8_0 rows (the same codes and
    steps), exactly for a table on a Q8_0 grid; an untied one keeps its table."""
    ids = np.array([[0, 7, N - 1, 7]], dtype=np.int64)
    for tied in (True, False):
        model = tied_model(tied)
        weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        quantized = quantize_q4_1(model, BLOCK, 4, {"/body/MatMul"}, {"/lm_head/MatMul"})
        ops = {n.op_type: n for n in quantized.graph.node}
        names = {i.name for i in quantized.graph.initializer}
        session = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])
        logits, embedded = session.run(["logits", "embedded"], {"ids": ids})
        known = {i.name for i in quantized.graph.initializer} | {"ids"}
        for node in quantized.graph.node:  # in an order that computes each value before it is read
            assert set(node.input) <= known, node.name
            known.update(node.output)
        if tied:
            assert "Gather" not in ops and "table" not in names, "no float table is left"
            assert ops["GatherBlockQuantized"].input[0] == ops["MatMulNBits"].input[1], "the head's own codes"
            np.testing.assert_array_equal(embedded[0], weights["table"][ids[0]])
        else:
            assert "GatherBlockQuantized" not in ops and "table" in names, "an untied embedding keeps its table"
            np.testing.assert_array_equal(embedded[0], weights["table"][ids[0]])
        np.testing.assert_allclose(logits[0], weights["table"][ids[0]] @ weights["head"], atol=0.01)


def test_steps_and_minima_are_stored_in_fp16_and_onnxruntime_folds_them_at_load(tmp_path):
    """The file holds each block's step and minimum in fp16 (as a GGUF does); onnxruntime's load-time
    constant folding turns them into the fp32 scales and offsets the kernels read, so the graph it
    runs has no Cast, Slice or Transpose left and the file is smaller than with fp32 ones."""
    model = two_matmul_model(q4_1_grid_weight(), np.eye(N, dtype=np.float32))
    quantized = quantize_q4_1(model, BLOCK, 4, {"/lm_head/MatMul"}, set())
    stored = {i.name: i.data_type for i in quantized.graph.initializer if i.name.endswith("_fp16")}
    assert stored == {
        "/body/MatMul_Q4_1_scales_fp16": TensorProto.FLOAT16,
        "/body/MatMul_Q4_1_minima_fp16": TensorProto.FLOAT16,
    }
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "loaded.onnx")
    ort.InferenceSession(quantized.SerializeToString(), options, providers=["CPUExecutionProvider"])
    loaded = onnx.load(tmp_path / "loaded.onnx")
    assert [n.op_type for n in loaded.graph.node] == ["MatMulNBits", "Split", "MatMul", "Add", "MatMul"]
    folded = {i.name: i.data_type for i in loaded.graph.initializer}
    assert folded["/body/MatMul_Q4_1_scales"] == folded["/body/MatMul_Q4_1_offsets"] == TensorProto.FLOAT
