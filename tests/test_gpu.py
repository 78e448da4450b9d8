"""The GPU path: a CUDA package and QLoRA training on a tiny model. Skipped without a CUDA GPU;
scripts/gpu_check.sh runs these on a GPU machine."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_recipe, write_recipe

from olive_flows.recipe.load import load_recipe
from olive_flows.run.console import Console
from olive_flows.run.pipeline import run_recipe
from olive_flows.validate.environment import cuda_device_count, missing_packages

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(cuda_device_count() == 0, reason="needs a CUDA GPU"),
]


def prefill_logits(package: Path, provider: str, adapter: str | None) -> np.ndarray:
    """Logits of one prompt through the package's model.onnx on ``provider``, with ``adapter`` (a
    file name in adapters/) bound through onnxruntime's LoRA adapter API, or the base model.
    (onnxruntime still places the attention mask's shape arithmetic, two small nodes, on the CPU.)"""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(package / "model.onnx"), options, providers=[provider])
    assert session.get_providers()[0] == provider
    run_options = ort.RunOptions()
    if adapter:
        lora = ort.LoraAdapter()
        lora.Load(str(package / "adapters" / f"{adapter}.onnx_adapter"))
        run_options.add_active_adapter(lora)
    ids = np.array([[1, 17, 923, 42, 7, 311]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    for spec in session.get_inputs():
        if spec.name.startswith("past_key_values."):
            shape = [1 if dim == "batch_size" else 0 if isinstance(dim, str) else dim for dim in spec.shape]
            feeds[spec.name] = np.zeros(shape, dtype=np.float16 if spec.type == "tensor(float16)" else np.float32)
        elif spec.name == "position_ids":
            feeds[spec.name] = np.arange(ids.shape[1], dtype=np.int64)[None]
    return session.run(["logits"], feeds, run_options)[0].astype(np.float32)


def test_cuda_package_runs_on_the_gpu_and_matches_the_cpu_package(tiny_model, tmp_path):
    """The fp16 CUDA package runs every node on the GPU, base and each adapter, and agrees with the
    fp32 CPU package built from the same training. onnxruntime-genai's own CUDA path is checked by
    the smoke test when its CUDA libraries load here (the manifest says which)."""
    recipe = tiny_recipe(
        tiny_model("phi3"),
        tmp_path / "out",
        cuda={"device": "gpu", "precision": "fp16"},
        cpu={"device": "cpu", "precision": "fp32"},
    )
    result = run_recipe(load_recipe(write_recipe(tmp_path, recipe)), console=Console(io.StringIO()))
    manifest = json.loads((result.packages["cuda"] / "manifest.json").read_text())
    assert manifest["target"]["provider"] == "CUDAExecutionProvider"
    print("cuda smoke check:", manifest["smoke_check"])
    assert manifest["smoke_check"] == "passed" or "cuda provider failed to load" in manifest["smoke_check"]
    base_cpu = prefill_logits(result.packages["cpu"], "CPUExecutionProvider", None)
    for adapter in (None, "contacts", "dates"):
        cpu = prefill_logits(result.packages["cpu"], "CPUExecutionProvider", adapter)
        gpu = prefill_logits(result.packages["cuda"], "CUDAExecutionProvider", adapter)
        scale = float(np.abs(cpu).max())
        print(
            f"{adapter or 'base'}: |logits| max {scale:.3f}, cuda-cpu {np.abs(gpu - cpu).max():.2e}, "
            f"adapter-base {np.abs(cpu - base_cpu).max():.2e}"
        )
        assert np.isfinite(gpu).all()
        np.testing.assert_allclose(gpu, cpu, atol=2e-2 * scale + 1e-3)
        if adapter:
            assert np.abs(cpu - base_cpu).max() > 0, "the adapter changed nothing"


@pytest.mark.skipif(bool(missing_packages(["bitsandbytes"])), reason="needs bitsandbytes (pip install '.[cuda]')")
def test_qlora_trains_on_the_gpu_and_exports(tiny_model, tmp_path):
    recipe = tiny_recipe(tiny_model("llama"), tmp_path / "out")
    for adapter in recipe["adapters"].values():
        adapter["method"] = "qlora"
    recipe["model"]["dtype"] = "bfloat16"
    result = run_recipe(load_recipe(write_recipe(tmp_path, recipe)), console=Console(io.StringIO()))
    manifest = json.loads((result.packages["cpu"] / "manifest.json").read_text())
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
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["smoke_check"].startswith("passed"), (target, manifest["smoke_check"])
        assert set(manifest["adapters"]) == {"contacts", "dates"}
    assert "cuda" in result.packages
