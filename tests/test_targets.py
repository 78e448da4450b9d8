"""Target profiles against Olive itself and Olive's own recipes; every built-in recipe compiles for
every target it lists; targets olive-flows cannot export for are refused before any training."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from conftest import write_recipe

from olive_flows import metadata
from olive_flows.compile.plan import plan_recipe
from olive_flows.console import Console
from olive_flows.problems import UserError
from olive_flows.recipe.catalog import builtin_recipes
from olive_flows.validate.environment import environment_problems, missing_packages
from olive_flows.validate.load import load_recipe

REFERENCE = json.loads((Path(__file__).parent / "reference" / "olive_recipes.json").read_text(encoding="utf-8"))
PROFILES = metadata.load("targets")["profiles"]


@pytest.mark.parametrize("provider", sorted(PROFILES))
def test_profile_matches_what_olive_supports(provider):
    from olive.hardware.constants import DEVICE_TO_EXECUTION_PROVIDERS
    from olive.passes.onnx.model_builder import ModelBuilder

    profile = PROFILES[provider]
    assert provider in {ep.value for ep in DEVICE_TO_EXECUTION_PROVIDERS[profile["olive_device"]]}
    if profile["export"] == "model_builder":
        # ModelBuilder falls back to a CPU model for a provider it does not know, silently.
        assert provider in {ep.value for ep in ModelBuilder.EP_MAP}
    else:
        assert profile["export"] is None and profile["export_blocker"]
    assert profile["adapters_at_runtime"] or profile["adapter_limitation"]


@pytest.mark.parametrize("name", sorted(builtin_recipes()))
def test_every_builtin_recipe_compiles_for_each_target(name, tmp_path):
    recipe = load_recipe(name, [f"output.dir={tmp_path}"])
    plan = plan_recipe(recipe, Console(io.StringIO()))
    assert {job.target for job in plan.jobs} == set(recipe.targets)
    for job in plan.jobs:
        provider = recipe.spec.targets[job.target].execution_provider
        accelerator = job.config["systems"]["target"]["accelerators"][0]
        assert accelerator == {"device": PROFILES[provider]["olive_device"], "execution_providers": [provider]}
        chain = [p["type"] for p in job.config["passes"].values()]
        method = metadata.method(recipe.spec.adapters[job.adapter].method)
        method_pass = method["olive_pass"]
        assert chain[0] == method["pass"] and OLIVE_NAME[chain[1]] == "ModelBuilder" and chain[-1] == "ExtractAdapters"
        reference = REFERENCE.get(provider)
        if reference:
            assert accelerator["device"] == reference["device"], reference["source"]
            assert _steps(chain, reference["chain"]) == _steps(reference["chain"], chain), reference["source"]
            if method_pass == "QLoRA":
                assert job.config["passes"]["train"]["torch_dtype"] == reference["train_dtype"], reference["source"]


# Olive's training passes (in Olive's examples) and olive-flows' subclasses of them (compiled)
TRAINING = {method[key] for method in metadata.methods().values() for key in ("olive_pass", "pass")}
# olive-flows' subclasses of Olive passes, by the Olive pass each extends
OLIVE_NAME = {
    **{name: entry["extends"] for name, entry in metadata.load("plugins")["subclassed_passes"].items()},
    **{method["pass"]: method["olive_pass"] for method in metadata.methods().values()},
}


def _steps(chain: list[str], other: list[str]) -> list[str]:
    """``chain`` in Olive's pass names with training passes named "train", keeping only the steps
    ``other`` has too."""

    def olive(step: str) -> str:
        return "train" if step in TRAINING else OLIVE_NAME.get(step, step)

    present = {olive(t) for t in other}
    return [olive(t) for t in chain if olive(t) in present]


@pytest.mark.parametrize(
    ("provider", "blocker"),
    [
        ("QNNExecutionProvider", "context binaries"),
        ("OpenVINOExecutionProvider", "merges the LoRA into the weights"),
        ("VitisAIExecutionProvider", "Quark"),
    ],
)
def test_npu_targets_without_an_export_path_are_refused_with_the_reason(provider, blocker, tmp_path):
    from conftest import tiny_recipe

    recipe = tiny_recipe(Path("model"), tmp_path / "out", npu={"device": "npu", "provider": provider})
    with pytest.raises(UserError) as error:
        load_recipe(write_recipe(tmp_path, recipe))
    text = error.value.text
    assert f"targets.npu.provider: olive-flows cannot export for {provider} yet" in text and blocker in text


def test_qlora_without_cuda_names_the_extra_and_the_gpu():
    messages = [p.format() for p in environment_problems(load_recipe("phi-qlora"))]
    if not any("needs a CUDA GPU" in m for m in messages):
        pytest.skip("this machine has a CUDA GPU")
    missing_bnb = [m for m in messages if "needs bitsandbytes" in m]
    if missing_packages(["bitsandbytes"]):
        assert missing_bnb, messages
    assert all(m.endswith("pip install 'olive-flows[cuda]'") for m in missing_bnb)
