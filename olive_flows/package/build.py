"""Build one target's package: assemble, check, write manifest.json, then move it into place.

Everything happens in a staging folder beside the final one; only a complete, checked package
replaces the previous one, so an interrupted or failed run leaves the old package untouched.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from olive_flows import metadata
from olive_flows.compile.workflow import Job, provider_of
from olive_flows.data.prepare import PreparedDataset
from olive_flows.files import write_json
from olive_flows.models.resolve import ModelRef
from olive_flows.package import graph
from olive_flows.package.assemble import PackageError, assemble
from olive_flows.package.manifest import FORMAT, MANIFEST, file_table, recipe_hash, versions
from olive_flows.recipe.model import Recipe
from olive_flows.workspace import Workspace

# Checks a staged package and returns (eval.json content or {}, a one-line smoke-check verdict).
PackageCheck = Callable[[Path], tuple[dict[str, Any], str]]


def build_package(
    recipe: Recipe,
    target: str,
    outputs: dict[str, tuple[Job, Path]],
    datasets: dict[str, PreparedDataset],
    ref: ModelRef,
    workspace: Workspace,
    check: PackageCheck,
) -> tuple[Path, dict[str, Any]]:
    """Build the package of ``target`` from each adapter's (job, Olive output folder); return it and its scores."""
    spec = recipe.targets[target]
    provider = provider_of(spec)
    profile = metadata.target_profile(provider)
    final = workspace.package(target)
    staging = final.with_name(f".{target}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        assemble({name: folder for name, (_, folder) in outputs.items()}, staging)
        quantized = graph.quantized_lora_nodes(staging / "model.onnx")
        if quantized:
            raise PackageError(
                f"{len(quantized)} LoRA MatMuls were quantized (first: {quantized[0]}); "
                "the base model would fail with no adapter active"
            )
        scores, smoke_verdict = check(staging)
        if scores:
            write_json(staging / "eval.json", scores)
        manifest = {
            "format": FORMAT,
            "recipe": {"name": recipe.name, "sha256": recipe_hash(recipe.data), "source": recipe.source},
            "base_model": {"id": ref.id, "kind": ref.kind, "revision": ref.revision},
            "target": {
                "name": target,
                "device": spec["device"],
                "provider": provider,
                "precision": spec["precision"],
                "runtime_package": profile["runtime_package"],
            },
            "adapters": {name: _adapter_entry(recipe, name, job, datasets) for name, (job, _) in outputs.items()},
            "smoke_check": smoke_verdict,
            "versions": versions(),
            "files": file_table(staging),
        }
        write_json(staging / MANIFEST, manifest)
        _swap_into_place(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final, scores


def _adapter_entry(recipe: Recipe, name: str, job: Job, datasets: dict[str, PreparedDataset]) -> dict[str, Any]:
    spec = recipe.adapters[name]
    data = datasets[spec["dataset"]]
    return {
        "file": f"adapters/{name}.onnx_adapter",
        "method": spec["method"],
        "r": spec["r"],
        "alpha": spec["alpha"],
        "target_modules": job.config["passes"]["train"]["target_modules"],
        "dataset": {"name": data.name, "sha256": data.sha256, "rows": data.rows, "audit": f"../_data/{name}"},
    }


def _swap_into_place(staging: Path, final: Path) -> None:
    """Replace ``final`` with ``staging``; the old package is removed only once the new one is in place."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def size_mb(folder: Path) -> float:
    """Total size of the files under ``folder`` in MB."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
