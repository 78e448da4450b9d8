"""The adapter switch (package/adapter_switch.py): the base runs without its LoRA nodes and gives
exactly what the whole graph gave, an adapter file with the flag exactly what it gave, run by
onnxruntime; a graph whose LoRA cannot be separated is refused."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from olive_flows.package.adapter_switch import FLAG, SWITCH, branch_nodes, switch_graph, switch_package
from olive_flows.package.assemble import PackageError

HIDDEN = 16
LORA = {  # two projections, the second reading the first's output plus its LoRA
    f"{p}.lora_{m}": shape for p in ("q", "o") for m, shape in (("A", (HIDDEN, "lora_r")), ("B", ("lora_r", HIDDEN)))
}


def lora_graph(path, join: str = "Add") -> None:
    """x -> q (fp16 weight cast at load) + LoRA -> o + scaled LoRA -> y, the LoRA weights optional
    inputs with one-zero-row defaults, as the package step leaves them."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Cast", ["q_w16"], ["q_w"], to=TensorProto.FLOAT, name="/q/cast"),
        helper.make_node("MatMul", ["x", "q_w"], ["q0"], name="/q/MatMul"),
        helper.make_node("MatMul", ["x", "q.lora_A"], ["qa"], name="/q/lora_A/MatMul"),
        helper.make_node("MatMul", ["qa", "q.lora_B"], ["qb"], name="/q/lora_B/MatMul"),
        helper.make_node(join, ["q0", "qb"], ["q"], name="/q/lora/Add"),
        helper.make_node("Relu", ["q"], ["h"], name="/act"),
        helper.make_node("MatMul", ["h", "o_w"], ["o0"], name="/o/MatMul"),
        helper.make_node("MatMul", ["h", "o.lora_A"], ["oa"], name="/o/lora_A/MatMul"),
        helper.make_node("MatMul", ["oa", "o.lora_B"], ["ob"], name="/o/lora_B/MatMul"),
        helper.make_node("Mul", ["ob", "o_scale"], ["obs"], name="/o/lora/Mul"),  # by a constant: still LoRA
        helper.make_node("Add", ["o0", "obs"], ["y"], name="/o/lora/Add"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", HIDDEN])]
    inputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in LORA.items()]
    defaults = [
        numpy_helper.from_array(rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float16), "q_w16"),
        numpy_helper.from_array(rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32), "o_w"),
        numpy_helper.from_array(np.array(0.5, np.float32), "o_scale"),
    ]
    defaults += [
        numpy_helper.from_array(np.zeros([1 if d == "lora_r" else d for d in shape], np.float32), name)
        for name, shape in LORA.items()
    ]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", HIDDEN])
    graph = helper.make_graph(nodes, "lora", inputs, [output], defaults)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), path)


def adapter(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: (rng.standard_normal([8 if d == "lora_r" else d for d in shape]) * 0.3).astype(np.float32)
        for name, shape in LORA.items()
    }


def run(path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return session(path).run(None, feeds)[0]


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_the_base_runs_without_lora_nodes_and_both_branches_match_the_whole_graph(tmp_path):
    path = tmp_path / "model.onnx"
    lora_graph(path)
    x = np.random.default_rng(1).standard_normal((3, HIDDEN)).astype(np.float32)
    weights = adapter(2)
    base, with_adapter = run(path, {"x": x}), run(path, {"x": x, **weights})
    assert not np.allclose(base, with_adapter)

    assert switch_graph(path)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    graph = model.graph
    assert [n.op_type for n in graph.node] == ["Cast", "Cast", "If"], "the fp16 weight's cast stays outside"
    assert graph.node[-1].name == SWITCH and list(graph.node[-1].output) == ["y"]
    base_alone = [n.name for n in branch_nodes(graph, "else_branch")]
    assert base_alone == ["/q/cast", f"{SWITCH}/Cast", "/q/MatMul", "/act", "/o/MatMul"]
    assert len(branch_nodes(graph)) == 2 + 10, "the adapter branch: the whole graph but the cast"

    switched = session(path)
    for _ in range(2):  # one session: its buffers are reused from run to run
        np.testing.assert_array_equal(switched.run(None, {"x": x})[0], base)
        flagged = {"x": x, **weights, FLAG: np.ones(1, np.float32)}
        np.testing.assert_array_equal(switched.run(None, flagged)[0], with_adapter)
    np.testing.assert_array_equal(switched.run(None, {"x": x, **weights})[0], base)  # without the flag, the base

    assert not switch_graph(path), "switched once"


def test_a_graph_without_adapter_inputs_is_left_alone(tmp_path):
    path = tmp_path / "model.onnx"
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    onnx.save(helper.make_model(graph), path)
    before = path.read_bytes()
    assert not switch_graph(path)
    assert path.read_bytes() == before


def test_a_lora_path_the_base_cannot_run_without_is_refused(tmp_path):
    path = tmp_path / "model.onnx"
    lora_graph(path, join="Mul")  # not a LoRA added to the base: the base would need its value
    before = path.read_bytes()
    with pytest.raises(PackageError, match="cannot separate the LoRA nodes from the base: /q/lora/Add \\(Mul\\)"):
        switch_graph(path)
    assert path.read_bytes() == before, "nothing half-written"


def test_every_adapter_file_of_a_switched_package_sets_the_flag(tmp_path):
    from olive.common.utils import load_weights, save_weights

    lora_graph(tmp_path / "model.onnx")
    (tmp_path / "adapters").mkdir()
    for name, seed in (("a", 3), ("b", 4)):
        save_weights(adapter(seed), tmp_path / "adapters" / f"{name}.onnx_adapter", "onnx_adapter")
    assert switch_package(tmp_path)
    for name, seed in (("a", 3), ("b", 4)):
        loaded = load_weights(tmp_path / "adapters" / f"{name}.onnx_adapter")
        assert loaded.pop(FLAG).tolist() == [1.0]
        assert loaded.keys() == adapter(seed).keys()
        for key, value in adapter(seed).items():
            np.testing.assert_array_equal(loaded[key], value)
