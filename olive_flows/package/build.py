"""Build one target's package: assemble, check, write manifest.json, then move it into place.

Everything happens in a staging folder beside the final one; only a complete, checked package
replaces the previous one, so an interrupted or failed run leaves the old package untouched.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from olive_flows.compile.workflow import Job
from olive_flows.data.prepare import PreparedDataset
from olive_flows.files import FolderInUse, replace_dir, staging_dir, write_json, write_text_atomic
from olive_flows.layout import ADAPTER_DIR, ADAPTER_SUFFIX, MANIFEST, RESOLVED_RECIPE, Workspace
from olive_flows.models.resolve import ModelRef
from olive_flows.package import adapter_switch, adapter_weights, graph, lora_fusion, merge_nodes
from olive_flows.package.assemble import PackageError, assemble
from olive_flows.package.manifest import (
    FORMAT,
    PLAN,
    file_table,
    inputs_fingerprint,
    read_manifest,
    recipe_hash,
    record_plan,
    up_to_date,
    versions,
)
from olive_flows.package.promotion import NotPromoted, losses
from olive_flows.package.versions import promote, read_scores, version_name
from olive_flows.paths import display_path
from olive_flows.recipe.model import Recipe

# Checks (and evaluates) a staged package, records its verdict in the manifest it is given, and
# returns what it measured (eval.json's content, or {} when the package cannot run here).
PackageCheck = Callable[[Path, dict[str, Any]], dict[str, Any]]


def build_package(
    recipe: Recipe,
    target: str,
    outputs: dict[str, tuple[Job, Path]],
    datasets: dict[str, PreparedDataset],
    ref: ModelRef,
    workspace: Workspace,
    check: PackageCheck,
    plan_sha256: str,
    rescore: PackageCheck,
) -> tuple[Path, dict[str, Any] | None]:
    """Build the package of ``target`` from each adapter's (job, Olive output folder); return it and
    its scores, or None for the scores when the package on disk was built from the same inputs and
    is intact (nothing is rebuilt or re-evaluated then). ``plan_sha256``: the run's plan fingerprint,
    recorded in the manifest. ``rescore`` (current package, new manifest): the current package's
    scores on the new one's rows, when promote.when: better finds them measured on others."""
    spec = recipe.spec.targets[target]
    final = workspace.package(target)
    session_options = spec.profile.get("session_options", {})
    fingerprint = inputs_fingerprint(
        recipe_hash(recipe.data), [target, session_options], {n: f for n, (_, f) in outputs.items()}
    )
    if up_to_date(final, fingerprint):
        record_plan(final, plan_sha256)
        return final, None
    staging = staging_dir(final)
    try:
        assemble({name: folder for name, (_, folder) in outputs.items()}, staging)
        quantized = graph.quantized_lora_nodes(staging / "model.onnx")
        if quantized:
            raise PackageError(
                f"{len(quantized)} LoRA MatMuls were quantized (first: {quantized[0]}); "
                "the base model would fail with no adapter active"
            )
        lora_fusion.fuse_package(staging)
        if spec.adapter_weights == "int8":
            adapter_weights.quantize_package(staging)
        if spec.profile.get("adapter_switch"):
            adapter_switch.switch_package(staging)
        if spec.profile.get("merge_nodes"):
            merge_nodes.merge_graph(staging / "model.onnx")
        write_session_options(staging, session_options)
        manifest = {
            "format": FORMAT,
            "recipe": {"name": recipe.name, "sha256": recipe_hash(recipe.data), "source": recipe.source},
            "inputs_sha256": fingerprint,
            PLAN: plan_sha256,
            "base_model": {"id": ref.id, "kind": ref.kind, "revision": ref.revision, "path": ref.path},
            "target": {
                "name": target,
                "device": spec.device,
                "provider": spec.execution_provider,
                "precision": spec.precision,
                "adapter_weights": spec.adapter_weights,
                "runtime_package": spec.profile["runtime_package"],
                **({"int4": asdict(spec.int4)} if spec.precision == "int4" else {}),
            },
            "adapters": {
                name: _adapter_entry(recipe, name, job, datasets, workspace, final)
                for name, (job, _) in outputs.items()
            },
            "versions": versions(),
        }
        write_json(staging / RESOLVED_RECIPE, recipe.data)
        scores = check(staging, manifest)
        manifest["files"] = file_table(staging)
        write_json(staging / MANIFEST, manifest)
        versions_folder = workspace.versions(target)
        # the same inputs rebuilt (after `olive-flows eval` with overrides, or a damaged file): the same
        # model, which its own scores (from other rows, maybe) must not keep out
        rebuilt = (read_manifest(final) or {}).get("inputs_sha256") == fingerprint
        promotion = recipe.data["promote"]
        current = None if rebuilt or promotion["when"] == "always" else read_scores(final)
        if current and scores and current.get("basis") != scores["basis"]:
            current = rescore(final, manifest)
        lost = losses(promotion, scores, current)
        if lost:
            kept = keep_candidate(staging, versions_folder)
            raise NotPromoted(f"package {target}: not promoted (promote.when: better): {'; '.join(lost)}. {kept}")
        try:
            promote(staging, final, versions_folder, recipe.data["output"]["keep_versions"])
        except FolderInUse as error:
            kept = keep_candidate(staging, versions_folder)
            raise FolderInUse(
                f"package {target}: not replaced, {error}: stop the chat or server that runs it and run again. {kept}"
            ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final, scores


def keep_candidate(staging: Path, versions: Path) -> str:
    """Keep the package assembled in ``staging`` beside the kept versions, as a candidate that did not
    become current; the sentence that says so."""
    candidate = versions / f"{version_name(staging)}-candidate"
    versions.mkdir(parents=True, exist_ok=True)
    replace_dir(staging, candidate)
    return f"The current package stays; the new one is kept as a candidate in {display_path(candidate)}"


def write_session_options(package: Path, options: dict[str, Any]) -> None:
    """Add the target profile's onnxruntime session options to the package's genai_config.json, so that
    every user of the package (the README's snippet, chat, eval, serve) runs as it was measured; an
    option the exported config already sets stays as it is."""
    if not options:
        return
    path = package / "genai_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    decoder = config["model"]["decoder"]
    decoder["session_options"] = {**options, **decoder.get("session_options", {})}
    write_text_atomic(path, json.dumps(config, indent=4) + "\n")


def _adapter_entry(
    recipe: Recipe, name: str, job: Job, datasets: dict[str, PreparedDataset], workspace: Workspace, package: Path
) -> dict[str, Any]:
    spec = recipe.spec.adapters[name]

    def beside(folder: Path) -> str:
        return Path(os.path.relpath(folder, package)).as_posix()

    if job.imported:  # trained elsewhere: what its own adapter_config.json says
        entry = {
            "method": "lora",
            "r": job.imported.r,
            "alpha": job.imported.alpha,
            "target_modules": job.imported.modules,
            "from": spec.from_,
            "trained_on": job.imported.base_model,
        }
    else:
        train = job.config["passes"]["train"]
        entry = {
            "method": spec.method,
            "r": spec.r,
            "alpha": spec.alpha,
            "target_modules": train["target_modules"],
            "world_size": train.get("world_size", 1),  # processes it trained with (data parallel)
        }
    dataset = recipe.spec.dataset_of(name)
    data = datasets[dataset] if dataset else None
    return {
        "file": f"{ADAPTER_DIR}/{name}{ADAPTER_SUFFIX}",
        **entry,
        "dataset": {
            "name": data.name,
            "sha256": data.sha256,
            "rows": data.rows,
            "audit": beside(workspace.audit(name)),
        }
        if data
        else None,
        "peft": beside(workspace.peft(name)),
    }


def size_mb(folder: Path) -> float:
    """Total size of the files under ``folder`` in MB."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
