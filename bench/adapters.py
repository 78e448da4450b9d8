"""What adapters cost at run time: decode slowdown by rank, switching latency, package size.

A package with four adapters (r = 8, 16, 16, 64 on the quickstart's dates data, a few training
steps each: rank, not quality, sets the cost) is built with olive-flows itself, once for each way
a package can store LoRA weights (targets.<name>.adapter_weights), so the two are measured side
by side. The quickstart's choice, int8, comes first and gives the ratios.
"""

from __future__ import annotations

import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from decode import package_engines, round_robin, runtime_graph, weight_bytes_per_token

from olive_flows.console import Console
from olive_flows.evaluate.evaluation import package_bytes
from olive_flows.evaluate.runtime import PackageRuntime
from olive_flows.validate.load import load_recipe

RANKS = {"r8": 8, "r16": 16, "r16b": 16, "r64": 64}
STORAGES = ("int8", "float")  # adapter_weights values; the first is the quickstart's


def build_packages(work: Path) -> dict[str, Path]:
    """The four-adapter package with each adapter_weights storage; after the first, Olive's cache
    holds the training and the export, so only the package is built again."""
    return {storage: shutil.copytree(build_package(work, storage), work / f"package-{storage}") for storage in STORAGES}


def build_package(work: Path, adapter_weights: str) -> Path:
    """The four-adapter package, its LoRA weights stored as ``adapter_weights``."""
    from olive_flows.pipeline import run_recipe

    overrides = [f"output.dir={work}", "name=bench-adapters", "adapters.contacts=null", "adapters.dates=null"]
    overrides.append(f"targets.cpu.adapter_weights={adapter_weights}")
    for name, r in RANKS.items():
        overrides += [
            f"adapters.{name}.dataset=dates",
            f"adapters.{name}.r={r}",
            f"adapters.{name}.alpha={2 * r}",
            f"adapters.{name}.training.max_steps=2",
            f"adapters.{name}.training.seed={r + len(name)}",
        ]
    overrides += ["evaluation.pytorch=false", "evaluation.max_rows=2", "evaluation.metrics.contacts=null"]
    result = run_recipe(load_recipe("quickstart", overrides), console=Console(io.StringIO()))
    return result.packages["cpu"]


def adapter_costs(
    packages: dict[str, Path], prompt: list[dict], new_tokens: int, repeats: int, threads: int
) -> dict[str, Any]:
    """Decode speed by rank and size, per storage (all engines of both packages taking turns);
    switching and reloading on the first package."""
    runtimes = {storage: PackageRuntime(package, threads=threads) for storage, package in packages.items()}
    names = [None, "r8", "r16", "r64"]
    engines = {
        f"{storage} {name}": engine
        for storage, runtime in runtimes.items()
        for name, engine in package_engines(runtime, prompt, names, new_tokens).items()
    }
    speeds = round_robin(engines, repeats)
    storages = {}
    for storage, package in packages.items():
        decode = {name: speeds[f"{storage} {name}"] for name in ("base", "r8", "r16", "r64")}
        base = decode["base"]["tokens_per_s"]
        base_bytes, adapter_bytes = package_bytes(package)
        with_adapters = base_bytes + sum(adapter_bytes.values())
        with tempfile.TemporaryDirectory() as tmp:
            read_per_token = weight_bytes_per_token(runtime_graph(package / "model.onnx", Path(tmp)))
        storages[storage] = {
            "decode": decode,
            "slowdown": {a: round(1 - decode[a]["tokens_per_s"] / base, 3) for a in ("r8", "r16", "r64")},
            "base_model_mb": round(base_bytes / 1e6, 1),
            "adapter_mb": {name: round(size / 1e6, 2) for name, size in sorted(adapter_bytes.items())},
            "package_4_adapters_mb": round(with_adapters / 1e6, 1),
            "package_4_adapters_vs_base": round(with_adapters / base_bytes, 3),
            "weights_read_per_token_mb": round(read_per_token / 1e6, 1),
            "package_4_adapters_vs_weights_read": round(
                (read_per_token + sum(adapter_bytes.values())) / read_per_token, 3
            ),
        }

    runtime, package = runtimes[STORAGES[0]], packages[STORAGES[0]]
    og = runtime._og
    tokens = runtime.prompt_tokens(prompt)
    switches: dict[str, list[float]] = {"default": [], "seeded": []}
    for i in range(repeats * 8):
        adapter, seeded = ("r16", "r16b")[i % 2], i % 4 >= 2
        params = og.GeneratorParams(runtime.model)
        # Without a seed, onnxruntime-genai seeds each generator's sampler from 624 draws of
        # std::random_device, which is the CPU's RDRAND: slow on some virtual machines.
        params.set_search_options(max_length=len(tokens) + 1, **({"random_seed": 0} if seeded else {}))
        started = time.perf_counter()
        generator = og.Generator(runtime.model, params)
        generator.set_active_adapter(runtime.adapters, adapter)
        switches["seeded" if seeded else "default"].append(time.perf_counter() - started)
    reloads = []
    for _ in range(repeats):
        started = time.perf_counter()
        og.Model(str(package))  # a merged model is this size: switching by reloading costs this
        reloads.append(time.perf_counter() - started)

    return {
        "adapter_weights": storages,
        "switch_ms": round(1000 * statistics.median(switches["default"]), 2),
        "switch_seeded_ms": round(1000 * statistics.median(switches["seeded"]), 2),
        "reload_merged_model_ms": round(1000 * statistics.median(reloads), 1),
        "four_merged_models_mb": round(4 * storages[STORAGES[0]]["base_model_mb"], 1),
    }
