"""What adapters cost at run time: decode slowdown by rank, switching latency, package size.

A package with four adapters (r = 8, 16, 16, 64 on the quickstart's dates data, a few training
steps each: rank, not quality, sets the cost) is built with olive-flows itself.
"""

from __future__ import annotations

import io
import statistics
import time
from pathlib import Path
from typing import Any

from decode import package_engines, round_robin

from olive_flows.evaluate.evaluation import package_bytes
from olive_flows.evaluate.runtime import PackageRuntime
from olive_flows.recipe.load import load_recipe
from olive_flows.run.console import Console

RANKS = {"r8": 8, "r16": 16, "r16b": 16, "r64": 64}


def build_package(work: Path) -> Path:
    """The four-adapter package (Olive's cache makes a second call cheap)."""
    from olive_flows.run.pipeline import run_recipe

    overrides = [f"output.dir={work}", "name=bench-adapters", "adapters.contacts=null", "adapters.dates=null"]
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


def adapter_costs(package: Path, prompt: list[dict], new_tokens: int, repeats: int, threads: int) -> dict[str, Any]:
    runtime = PackageRuntime(package, threads=threads)
    speeds = round_robin(package_engines(runtime, prompt, [None, "r8", "r16", "r64"], new_tokens), repeats)
    base = speeds["base"]["tokens_per_s"]
    slowdown = {a: round(1 - speeds[a]["tokens_per_s"] / base, 3) for a in ("r8", "r16", "r64")}

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

    base_bytes, adapter_bytes = package_bytes(package)
    with_adapters = base_bytes + sum(adapter_bytes.values())
    return {
        "decode": speeds,
        "slowdown": slowdown,
        "switch_ms": round(1000 * statistics.median(switches["default"]), 2),
        "switch_seeded_ms": round(1000 * statistics.median(switches["seeded"]), 2),
        "reload_merged_model_ms": round(1000 * statistics.median(reloads), 1),
        "base_model_mb": round(base_bytes / 1e6, 1),
        "adapter_mb": {name: round(size / 1e6, 2) for name, size in sorted(adapter_bytes.items())},
        "package_4_adapters_mb": round(with_adapters / 1e6, 1),
        "four_merged_models_mb": round(4 * base_bytes / 1e6, 1),
        "package_4_adapters_vs_base": round(with_adapters / base_bytes, 3),
    }
