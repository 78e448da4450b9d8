"""The GPU path: a CUDA package and QLoRA training on a tiny model. Skipped without a CUDA GPU;
scripts/gpu_check.sh runs these on a GPU machine."""

from __future__ import annotations

import io
import json

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


def test_cuda_target_builds_and_runs_on_the_gpu(tiny_model, tmp_path):
    recipe = tiny_recipe(tiny_model("phi3"), tmp_path / "out", cuda={"device": "gpu", "precision": "fp16"})
    result = run_recipe(load_recipe(write_recipe(tmp_path, recipe)), console=Console(io.StringIO()))
    manifest = json.loads((result.packages["cuda"] / "manifest.json").read_text())
    assert manifest["target"]["provider"] == "CUDAExecutionProvider"
    assert manifest["smoke_check"] == "passed", (
        "checked on the GPU (scripts/gpu_check.sh installs onnxruntime-genai-cuda)"
    )


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
