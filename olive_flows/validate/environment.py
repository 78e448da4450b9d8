"""What this machine must have for a recipe to run: checked before any training starts.

These are not mistakes in the recipe (the same recipe runs on a GPU box), so ``validate`` reports
them as warnings about this machine and ``run`` stops on them with the exact remedy.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from collections.abc import Iterator

from olive_flows import metadata
from olive_flows.problems import Problem
from olive_flows.recipe.distributed import DistributedConfigError, strategy
from olive_flows.recipe.model import Recipe

# Import names of the packages each training tracker can use (any one of them will do).
TRACKER_PACKAGES = {"tensorboard": ["tensorboard", "tensorboardX"], "mlflow": ["mlflow"]}


def cuda_device_count() -> int:
    """Number of CUDA devices the driver reports, asked without importing torch (0 when none)."""
    names = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")
    for name in names:
        try:
            driver = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if driver.cuInit(0) == 0 and driver.cuDeviceGetCount(ctypes.byref(count)) == 0:
            return count.value
    return 0


def missing_packages(modules: list[str]) -> list[str]:
    """The Python packages (by import name) that are not installed."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def environment_problems(recipe: Recipe, processes: int | None = None) -> Iterator[Problem]:
    """What this machine (and a run of ``processes`` processes; None: not known yet, as in
    ``validate``) lacks to train every adapter of ``recipe``."""
    for name, adapter in recipe.adapters.items():
        method = metadata.method(adapter["method"])
        where = ("adapters", name, "method")
        missing = missing_packages(method["packages"])
        if missing:
            install = (
                f"pip install 'olive-flows[{method['extra']}]'"
                if method["extra"]
                else f"pip install {' '.join(missing)}"
            )
            yield recipe.problem(where, f"{adapter['method']} needs {', '.join(missing)}", install)
        if method["needs_cuda"] and cuda_device_count() == 0:
            yield recipe.problem(where, f"{adapter['method']} needs a CUDA GPU to train, and this machine has none")
        yield from _tracker_problems(recipe, name, adapter)
        if "dataset" in adapter:
            yield from _distributed_problems(recipe, name, processes)


def _distributed_problems(recipe: Recipe, name: str, processes: int | None) -> Iterator[Problem]:
    """A sharding strategy has company to shard with, and what it needs is installed. (A config file
    that cannot be read is the recipe's mistake: validate/rules.py reports it.)"""
    try:
        chosen = strategy(recipe, name)
    except DistributedConfigError:
        return
    settings = recipe.adapters[name]["training"]["distributed"]
    where = ("adapters", name, "training", "distributed", "config" if "config" in settings else "strategy")
    if chosen.shards and processes == 1:
        yield recipe.problem(
            where,
            f"{chosen.name} shards the model across processes, and this run has one",
            "run with --processes N (N >= 2), under torchrun or srun, or use strategy: ddp",
        )
    missing = missing_packages(chosen.facts["packages"])
    if missing and processes != 1:
        yield recipe.problem(
            where, f"{chosen.name} needs {', '.join(missing)}", f"pip install 'olive-flows[{chosen.facts['extra']}]'"
        )


def _tracker_problems(recipe: Recipe, name: str, adapter: dict) -> Iterator[Problem]:
    """The training trackers the adapter logs to are installed."""
    for tracker in adapter["training"]["report_to"]:
        choices = TRACKER_PACKAGES[tracker]
        if len(missing_packages(choices)) == len(choices):
            yield recipe.problem(
                ("adapters", name, "training", "report_to"),
                f"logging to {tracker} needs {' or '.join(choices)}",
                "pip install 'olive-flows[tracking]'",
            )
