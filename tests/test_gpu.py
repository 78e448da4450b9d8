"""The GPU path: CUDA packages, QLoRA training and the catalog's Phi recipes on tiny models.
Skipped without a CUDA GPU; scripts/gpu_check.sh runs these on a GPU machine."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_recipe, write_recipe

from olive_flows.console import Console
from olive_flows.pipeline import run_recipe
from olive_flows.validate.environment import cuda_device_count, missing_packages
from olive_flows.validate.load import load_recipe

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(cuda_device_count() == 0, reason="needs a CUDA GPU"),
]


def prefill_logits(package: Path, provider: str, adapter: str | None) -> np.ndarray:
    """Logits of one prompt through the package's model.onnx on ``provider``, with ``adapter`` (a
    file name in adapters/) bound through onnxruntime's LoRA adapter API, or the base model.
    numpy has no bfloat16, so the logits are read through a Cast to float appended to a copy of the
    graph, and bf16 inputs are made as typed OrtValues. (onnxruntime still places the attention
    mask's shape arithmetic, two small nodes, on the CPU.)"""
    import onnx
    import onnxruntime as ort

    graph = onnx.load(package / "model.onnx", load_external_data=False)
    graph.graph.node.append(onnx.helper.make_node("Cast", ["logits"], ["logits_float"], to=onnx.TensorProto.FLOAT))
    graph.graph.output.append(onnx.helper.make_tensor_value_info("logits_float", onnx.TensorProto.FLOAT, None))
    copy = package / "model.logits_float.onnx"  # beside model.onnx, where its external data is
    onnx.save(graph, copy)
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(copy), options, providers=[provider])
    finally:
        copy.unlink()
    assert session.get_providers()[0] == provider
    run_options = ort.RunOptions()
    if adapter:
        lora = ort.LoraAdapter()
        lora.Load(str(package / "adapters" / f"{adapter}.onnx_adapter"))
        run_options.add_active_adapter(lora)
    ids = np.array([[1, 17, 923, 42, 7, 311]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    for spec in session.get_inputs():
        shape = [1 if dim == "batch_size" else 0 if isinstance(dim, str) else dim for dim in spec.shape]
        if spec.name.startswith("past_key_values.") and spec.type == "tensor(bfloat16)":
            feeds[spec.name] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                np.zeros(shape, dtype=np.uint16), onnx.TensorProto.BFLOAT16
            )
        elif spec.name.startswith("past_key_values."):
            feeds[spec.name] = np.zeros(shape, dtype=np.float16 if spec.type == "tensor(float16)" else np.float32)
        elif spec.name == "position_ids":
            feeds[spec.name] = np.arange(ids.shape[1], dtype=np.int64)[None]
    feeds = {k: v if isinstance(v, ort.OrtValue) else ort.OrtValue.ortvalue_from_numpy(v) for k, v in feeds.items()}
    return session.run_with_ort_values(["logits_float"], feeds, run_options)[0].numpy()


# CUDA package -> (CPU package it must match, tolerance as a fraction of the largest logit).
CUDA_VS_CPU = {"cuda": ("cpu", 2e-2), "cuda_bf16": ("cpu", 5e-2), "cuda_int4": ("cpu_int4", 5e-2)}


def test_cuda_packages_run_on_the_gpu_and_match_the_cpu_packages(tiny_model, tmp_path):
    """The fp16, bf16 and int4 CUDA packages run on the GPU, base and each adapter, and agree with
    the CPU packages (fp32, int4) built from the same training. genai's own CUDA path is checked by
    the smoke test where its CUDA libraries load (the manifest says which)."""
    recipe = tiny_recipe(
        tiny_model("phi3"),
        tmp_path / "out",
        cuda={"device": "gpu", "precision": "fp16"},
        cuda_int4={"device": "gpu", "precision": "int4"},
        cuda_bf16={"device": "gpu", "precision": "bf16"},
        cpu={"device": "cpu", "precision": "fp32"},
        cpu_int4={"device": "cpu", "precision": "int4", "int4": {"algorithm": "k_quant_mixed"}},
    )
    packages = run_recipe(load_recipe(write_recipe(tmp_path, recipe)), console=Console(io.StringIO())).packages
    for name in ("cuda", "cuda_int4", "cuda_bf16"):
        manifest = json.loads((packages[name] / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["target"]["provider"] == "CUDAExecutionProvider"
        print(f"{name} smoke check:", manifest["smoke_check"])
        assert manifest["smoke_check"] == "passed", "on a GPU machine the CUDA path itself must run"
    for name, (cpu_name, tolerance) in CUDA_VS_CPU.items():
        base_cpu = prefill_logits(packages[cpu_name], "CPUExecutionProvider", None)
        for adapter in (None, "contacts", "dates"):
            cpu = prefill_logits(packages[cpu_name], "CPUExecutionProvider", adapter)
            gpu = prefill_logits(packages[name], "CUDAExecutionProvider", adapter)
            scale = float(np.abs(cpu).max())
            print(
                f"{name} {adapter or 'base'}: |logits| max {scale:.3f}, cuda-cpu {np.abs(gpu - cpu).max():.2e}, "
                f"adapter-base {np.abs(cpu - base_cpu).max():.2e}"
            )
            assert np.isfinite(gpu).all()
            np.testing.assert_allclose(gpu, cpu, atol=tolerance * scale + 1e-3)
            if adapter:
                assert np.abs(cpu - base_cpu).max() > 5 * tolerance * scale, "the adapter must move the logits"


@pytest.mark.skipif(bool(missing_packages(["bitsandbytes"])), reason="needs bitsandbytes (pip install '.[cuda]')")
def test_qlora_trains_on_the_gpu_and_exports(tiny_model, tmp_path):
    recipe = tiny_recipe(tiny_model("llama"), tmp_path / "out")
    for adapter in recipe["adapters"].values():
        adapter["method"] = "qlora"
    recipe["model"]["dtype"] = "bfloat16"
    result = run_recipe(load_recipe(write_recipe(tmp_path, recipe)), console=Console(io.StringIO()))
    manifest = json.loads((result.packages["cpu"] / "manifest.json").read_text(encoding="utf-8"))
    assert {a["method"] for a in manifest["adapters"].values()} == {"qlora"}
    assert manifest["smoke_check"] == "passed"


@pytest.mark.parametrize("name", ["phi-lora", "phi-qlora"])
def test_builtin_phi_recipe_runs_on_the_gpu_with_a_tiny_phi3(name, tiny_model, tmp_path):
    """The catalog's Phi recipes as written, with only the model, the step count and the output swapped."""
    if name == "phi-qlora" and missing_packages(["bitsandbytes"]):
        pytest.skip("needs bitsandbytes (pip install '.[cuda]')")
    overrides = [
        f"model.id={tiny_model('phi3')}",
        f"output.dir={tmp_path / 'out'}",
        "evaluation.max_rows=2",
        *(f"adapters.{a}.training.{k}" for a in ("contacts", "dates") for k in ("epochs=null", "max_steps=3")),
    ]
    recipe = load_recipe(name, overrides)
    result = run_recipe(recipe, console=Console(io.StringIO()))
    for target, folder in result.packages.items():
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["smoke_check"] == "passed", (target, manifest["smoke_check"])  # not "passed on CPU"
        assert set(manifest["adapters"]) == {"contacts", "dates"}
    assert "cuda" in result.packages
