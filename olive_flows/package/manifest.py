"""manifest.json: what a package was built from, with what, and the sha256 of every file in it."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from olive_flows.files import sha256_file, write_json
from olive_flows.layout import MANIFEST

# The layout of a package's graph and adapter files; a new one rebuilds packages an earlier
# olive-flows built from the same inputs. 2: fused LoRA A with split ranks, int8 LoRA MatMuls as
# DynamicQuantizeMatMul, no empty LoRA weight. 3: on CPU, the LoRA nodes in an If that only an
# adapter file's flag selects (adapter_switch.py). 4: int8 LoRA codes in -63..63 (adapter_weights.py:
# full 8-bit ones overflow onnxruntime's int8 kernel on CPUs without VNNI), and on CPU the packed
# q/k/v read by the attention and the LoRA joined in one Sum (merge_nodes.py).
FORMAT = "olive-flows-package/4"
VERSIONED_PACKAGES = ("olive-flows", "olive-ai", "onnxruntime", "onnxruntime-genai", "torch", "transformers", "peft")


def recipe_hash(resolved: dict[str, Any]) -> str:
    """sha256 of the resolved recipe as canonical JSON: the same recipe always hashes the same."""
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def versions() -> dict[str, str | None]:
    """Installed versions of the packages a package's behaviour depends on."""
    found: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            found[name] = None
    return found


def file_table(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under ``folder`` except the manifest, by relative POSIX path."""
    return {
        path.relative_to(folder).as_posix(): {"sha256": sha256_file(path), "size": path.stat().st_size}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


# Olive writes these with timestamps and run ids; they say nothing about the model.
RUN_RECORDS = {"footprint.json", "output_footprint.json", "run_history.txt"}


def inputs_fingerprint(recipe_sha256: str, target: Any, job_outputs: dict[str, Path]) -> str:
    """sha256 of everything a package is built from: the resolved recipe, the target (any JSON value
    that names it and what olive-flows adds for it), the versions
    and the content of each adapter's Olive output. Equal fingerprints build equal packages."""
    digest = hashlib.sha256(json.dumps([FORMAT, recipe_sha256, target, versions()], sort_keys=True).encode())
    for adapter, folder in sorted(job_outputs.items()):
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.name not in RUN_RECORDS:
                digest.update(f"{adapter}/{path.name}:{sha256_file(path)}".encode())
    return digest.hexdigest()


# manifest.json key: the plan fingerprint of the run that built (or last found up to date) the package
PLAN = "plan_sha256"
# The model and adapter folders a workflow loads; Olive hashes their content for its cache, and so
# does plan_fingerprint.
LOADED_FOLDERS = ("model_path", "adapter_path")


def plan_fingerprint(recipe_sha256: str, configs: list[dict[str, Any]]) -> str:
    """sha256 of everything a run's Olive workflows start from: the package format, the versions,
    the resolved recipe, the compiled workflow ``configs`` (the data files they name are named by
    their content) and the content of the model and adapter folders they load. A package recorded
    with the same plan fingerprint is what those workflows give again, so an unchanged re-run need
    not start Olive (whose imports and cache look-ups take most of its time) to find that out."""
    digest = hashlib.sha256(json.dumps([FORMAT, recipe_sha256, versions(), configs], sort_keys=True).encode())
    loaded = {config["input_model"].get(key) for config in configs for key in LOADED_FOLDERS}
    for name in sorted(loaded - {None}):
        root = Path(name)
        for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if path.is_file():
                digest.update(f"{path}:{sha256_file(path)}".encode())
    return digest.hexdigest()


# manifest.json key: the evaluation.* overrides `olive-flows eval` last evaluated the package with
EVALUATION_OVERRIDES = "evaluation_overrides"


def read_manifest(package: Path) -> dict[str, Any] | None:
    """``package``'s manifest.json, or None where there is none (no package yet) or it is unreadable."""
    try:
        return json.loads((package / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def up_to_date(package: Path, fingerprint: str, key: str = "inputs_sha256") -> bool:
    """Whether ``package``'s manifest records ``fingerprint`` under ``key`` (the inputs it was built
    from, or with PLAN the plan of the run that built it), its files are intact and its eval.json
    holds the recipe's own evaluation (not one `olive-flows eval` ran with overrides, which a run
    would otherwise report as the recipe's)."""
    manifest = read_manifest(package)
    return (
        manifest is not None
        and manifest.get(key) == fingerprint
        and not manifest.get(EVALUATION_OVERRIDES)
        and manifest.get("files") == file_table(package)
    )


def record_plan(package: Path, plan_sha256: str) -> None:
    """Record ``plan_sha256`` in the manifest of a package a run found up to date: one built before
    manifests recorded it, or from the same Olive outputs by another plan."""
    manifest = read_manifest(package)
    if manifest is not None and manifest.get(PLAN) != plan_sha256:
        write_json(package / MANIFEST, {**manifest, PLAN: plan_sha256})
