"""A package built here runs token for token on the oldest onnxruntime-genai olive-flows supports."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from conftest import REPO, tiny_recipe, write_recipe

from olive_flows.console import Console
from olive_flows.pipeline import run_recipe
from olive_flows.validate.load import load_recipe

OLDEST = ("0.14.1", "1.31.1")  # onnxruntime-genai, and the onnxruntime it was tested with


@pytest.mark.slow
def test_a_package_gives_the_same_tokens_on_the_oldest_runtime(tiny_model, tmp_path):
    """scripts/runtime_check.py: the base and each adapter, greedy, here and in a side environment with
    onnxruntime-genai 0.14.1 (installed once from the package registry into the olive-flows cache)."""
    recipe = tiny_recipe(tiny_model("llama"), tmp_path / "out")
    for adapter in recipe["adapters"].values():
        adapter["training"] = {**adapter["training"], "max_steps": 30}  # enough to change greedy answers
    recipe["targets"] = {"cpu": {"device": "cpu", "int4": {"algorithm": "q4_1"}, "adapter_weights": "int8"}}
    result = run_recipe(load_recipe(write_recipe(tmp_path, recipe)), console=Console(io.StringIO()))
    check = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "runtime_check.py"), str(result.packages["cpu"]),
         "--genai", OLDEST[0], "--onnxruntime", OLDEST[1]],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    lines = check.stdout.splitlines()
    assert f"against onnxruntime-genai {OLDEST[0]} (onnxruntime {OLDEST[1]})" in lines[0]
    assert [line.split() for line in lines[1:]] == [
        ["base", "identical"],
        ["contacts", "identical"],
        ["dates", "identical"],
    ]
