"""One LoRA A MatMul for the projections of a packed MatMul (package/lora_fusion.py): the same
outputs as the separate LoRAs, with no adapter active, with one, with ranks that differ by module
and with a projection an adapter leaves out; also with int8 adapter weights (adapter_weights.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from olive_flows.package.lora_fusion import fuse_graph, fuse_package, fuse_weights

WIDTHS = {"q": 8, "k": 4, "v": 4}
HIDDEN = 8


def a_name(p: str) -> str:
    return f"model.layers.0.attn.{p}_proj.lora_A.MatMul.weight"


def b_name(p: str) -> str:
    return f"model.layers.0.attn.{p}_proj.lora_B.MatMul.weight"


def packed_graph(path) -> None:
    """x -> packed MatMul -> Split into q, k, v, each + x @ A @ B (optional inputs, rank 0 by
    default), as the Q4_1 pass and ExtractAdapters leave a layer's attention."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "packed_w"], ["packed"], name="/model/layers.0/attn/qkv/MatMul"),
        helper.make_node("Split", ["packed", "widths"], ["q0", "k0", "v0"], name="/model/layers.0/attn/Split", axis=-1),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", HIDDEN])]
    initializers = [
        numpy_helper.from_array(rng.normal(size=(HIDDEN, sum(WIDTHS.values()))).astype(np.float32), "packed_w"),
        numpy_helper.from_array(np.array(list(WIDTHS.values()), dtype=np.int64), "widths"),
    ]
    for p, width in WIDTHS.items():
        stem = f"/model/layers.0/attn/{p}_proj"
        nodes += [
            helper.make_node("MatMul", ["x", a_name(p)], [f"{p}_a"], name=f"{stem}/lora_A/MatMul"),
            helper.make_node("MatMul", [f"{p}_a", b_name(p)], [f"{p}_b"], name=f"{stem}/lora_B/MatMul"),
            helper.make_node("Add", [f"{p}0", f"{p}_b"], [f"{p}_sum"], name=f"{stem}/lora/Add"),
            helper.make_node("Identity", [f"{p}_sum"], [p], name=f"{stem}/out"),
        ]
        inputs += [
            helper.make_tensor_value_info(a_name(p), TensorProto.FLOAT, [HIDDEN, "lora_r"]),
            helper.make_tensor_value_info(b_name(p), TensorProto.FLOAT, ["lora_r", width]),
        ]
        initializers += [
            numpy_helper.from_array(np.zeros((HIDDEN, 0), np.float32), a_name(p)),
            numpy_helper.from_array(np.zeros((0, width), np.float32), b_name(p)),
        ]
    outputs = [helper.make_tensor_value_info(p, TensorProto.FLOAT, ["batch", w]) for p, w in WIDTHS.items()]
    graph = helper.make_graph(nodes, "packed", inputs, outputs, initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)


def adapter(rank: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {}
    for p, width in WIDTHS.items():
        weights[a_name(p)] = rng.normal(size=(HIDDEN, rank)).astype(np.float32)
        weights[b_name(p)] = rng.normal(size=(rank, width)).astype(np.float32)
    return weights


def run(path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_fused_lora_gives_the_outputs_of_the_separate_ones(tmp_path):
    plain, fused = tmp_path / "plain.onnx", tmp_path / "fused.onnx"
    packed_graph(plain)
    packed_graph(fused)
    groups = fuse_graph(fused)
    assert [group.a for group in groups] == [[a_name(p) for p in WIDTHS]]
    nodes = onnx.load(fused).graph.node
    assert [n.op_type for n in nodes if "lora" in n.name] == [
        "MatMul",
        "Split",
        "MatMul",
        "MatMul",
        "MatMul",
        "Concat",
        "Add",
    ]
    x = np.random.default_rng(1).normal(size=(3, HIDDEN)).astype(np.float32)
    for weights in ({}, adapter(4, 2)):  # no adapter active (rank 0 defaults), then one
        expected = run(plain, {"x": x, **weights})
        found = run(fused, {"x": x, **fuse_weights(weights, groups)} if weights else {"x": x})
        for want, got in zip(expected, found, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_package_and_its_adapter_files_are_fused_whatever_their_ranks(tmp_path):
    from olive.common.utils import load_weights, save_weights

    (tmp_path / "adapters").mkdir()
    packed_graph(tmp_path / "model.onnx")
    packed_graph(tmp_path / "plain.onnx")
    uneven = adapter(4, 4) | {a_name("v"): np.ones((HIDDEN, 2), np.float32), b_name("v"): np.ones((2, 4), np.float32)}
    without_v = {name: value for name, value in adapter(8, 5).items() if "v_proj" not in name}
    adapters = {"even": adapter(4, 3), "uneven": uneven, "without_v": without_v}
    for name, weights in adapters.items():
        save_weights(weights, tmp_path / "adapters" / f"{name}.onnx_adapter", "onnx_adapter")
    assert fuse_package(tmp_path) == 1
    x = np.random.default_rng(6).normal(size=(2, HIDDEN)).astype(np.float32)
    for name, weights in adapters.items():
        stored = load_weights(tmp_path / "adapters" / f"{name}.onnx_adapter")
        assert a_name("q") not in stored and {b_name(p) for p in WIDTHS if p in "qk"} <= set(stored)
        expected = run(tmp_path / "plain.onnx", {"x": x, **weights})
        for want, got in zip(expected, run(tmp_path / "model.onnx", {"x": x, **stored}), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    ranks = load_weights(tmp_path / "adapters" / "uneven.onnx_adapter")[a_name("q") + ".fused.ranks"]
    assert ranks.tolist() == [4, 4, 2]
    without = load_weights(tmp_path / "adapters" / "without_v.onnx_adapter")
    assert without[a_name("q") + ".fused.ranks"].tolist() == [8, 8, 1], "a left-out projection: one zero column"
    assert not without[a_name("q") + ".fused"][:, 16:].any()


def test_no_lora_input_is_empty_and_int8_weights_follow_the_float_ones(tmp_path):
    """With no adapter active every LoRA weight is a zero row or column, never empty: the int8
    package's DynamicQuantizeMatMul returns garbage for an empty one."""
    from olive.common.utils import load_weights, save_weights

    from olive_flows.package.adapter_weights import quantize_package

    (tmp_path / "adapters").mkdir()
    packed_graph(tmp_path / "model.onnx")
    packed_graph(tmp_path / "plain.onnx")
    without_v = {name: value for name, value in adapter(8, 7).items() if "v_proj" not in name}
    save_weights(without_v, tmp_path / "adapters" / "without_v.onnx_adapter", "onnx_adapter")
    fuse_package(tmp_path)
    defaults = {i.name: list(i.dims) for i in onnx.load(tmp_path / "model.onnx").graph.initializer}
    assert defaults[a_name("q") + ".fused"] == [HIDDEN, 3] and defaults[b_name("k")] == [1, WIDTHS["k"]]
    quantize_package(tmp_path)
    x = np.random.default_rng(8).normal(size=(2, HIDDEN)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    stored = load_weights(tmp_path / "adapters" / "without_v.onnx_adapter")
    base, tuned = run(tmp_path / "plain.onnx", {"x": x}), run(tmp_path / "plain.onnx", {"x": x, **without_v})
    for _ in range(3):  # (onnxruntime reuses its buffers: garbage from an empty weight shows on a later run)
        for want, got in zip(base, session.run(None, {"x": x}), strict=True):
            np.testing.assert_array_equal(got, want)
        for want, got, before in zip(tuned, session.run(None, {"x": x, **stored}), base, strict=True):
            assert np.abs(got - want).max() < 0.06 * max(np.abs(want - before).max(), 1e-6)  # 7-bit codes
