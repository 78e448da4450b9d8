"""Everything a run needs decided before Olive starts: the model, the prepared data, the workflows.

Planning writes files, and says which: the data split files (the compiled configs name them, and
a changed dataset gets a new folder, so Olive's cache never reuses an adapter trained on old rows)
and the compiled configs. `olive-flows compile` stops here and lists them; `olive-flows run` also
prepares a built-in model for Olive (``model_log``) and goes on to execute the configs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from olive_flows import metadata
from olive_flows.capture import output_to
from olive_flows.compile.workflow import Job, compile_recipe
from olive_flows.console import Console
from olive_flows.data.prepare import PreparedDataset, prepare_dataset
from olive_flows.files import write_text_atomic
from olive_flows.layout import Workspace
from olive_flows.models import hub
from olive_flows.models.imported import ImportedAdapter, NotAnAdapter, imported_folder, is_hub_id, read_imported
from olive_flows.models.resolve import ModelRef, model_config, model_facts, model_ref
from olive_flows.paths import display_path
from olive_flows.plugins import PACKAGE_CONFIG_FILE, package_config
from olive_flows.problems import UserError
from olive_flows.recipe.model import Recipe
from olive_flows.validate.rules import fit_problems


@dataclass
class Plan:
    """A recipe resolved down to the Olive workflows that produce its packages."""

    recipe: Recipe
    workspace: Workspace
    model: ModelRef
    facts: dict[str, Any]
    datasets: dict[str, PreparedDataset]
    imported: dict[str, ImportedAdapter]
    jobs: list[Job]
    written: list[Path]  # the data folders and config files planning wrote or found up to date


def needs_hub(recipe: Recipe) -> bool:
    """Whether anything in the recipe is fetched from the Hugging Face hubs."""
    return model_ref(recipe).kind == "hub" or any("hf" in spec for spec in recipe.datasets.values())


def prepare_model(ref: ModelRef, console: Console, model_log: Path | None) -> tuple[ModelRef, dict[str, Any]]:
    """The base model as Olive will load it, and its model_type and layer count.

    With ``model_log`` (a run) the model is made available on disk first: a built-in model is
    materialized (what it prints goes to that log); a hub model is downloaded, or found in the
    Hugging Face cache when offline, and Olive gets its snapshot folder, pinned to the commit it
    resolved to. A dry run only reads config.json (from the cache, or downloads that one file)."""
    if ref.kind == "builtin" and model_log:
        from olive_flows.models.builtin import materialize as materialize_builtin

        with output_to(model_log):
            folder = materialize_builtin(ref.builtin_name)
        console.say(f"model {ref.id}: {display_path(folder)}")
    elif ref.kind == "hub" and model_log:
        folder, commit = hub.snapshot(ref.id, ref.revision)
        ref = replace(ref, path=str(folder), revision=commit)
        console.say(f"model {ref.id} at commit {commit[:12]}: {display_path(folder)}")
    elif ref.kind == "hub" and model_facts(ref) is None and not hub.hub_offline():
        hub.snapshot(ref.id, ref.revision, only=["config.json"])
    facts = model_facts(ref)
    if ref.kind == "hub" and not facts:
        raise hub.unavailable(
            ref.id, "its config.json is not in the Hugging Face cache and the hub is off (offline mode)"
        )
    if not facts or not facts.get("num_hidden_layers"):
        raise UserError(f"model '{ref.id}': its config.json has no num_hidden_layers; olive-flows cannot export it")
    return ref, facts


def prepare_imported(
    recipe: Recipe, ref: ModelRef, facts: dict[str, Any], console: Console
) -> dict[str, ImportedAdapter]:
    """Every adapter trained elsewhere, read from its folder (a hub id is fetched, or found in the cache
    offline), and checked against the model once it is on disk: validation may not have seen either."""
    arch = metadata.architecture(facts["model_type"])
    config = model_config(ref)
    found = {}
    for name, adapter in recipe.spec.adapters.items():
        if not adapter.from_:
            continue
        where = ("adapters", name, "from")
        folder = imported_folder(recipe, name)
        if folder is None and is_hub_id(adapter.from_):
            folder, _ = hub.snapshot(
                adapter.from_, None, what=("adapter", f"set adapters.{name}.from to a local folder")
            )
        if folder is None:
            raise UserError([recipe.problem(where, f"adapter folder {adapter.from_} does not exist")])
        try:
            found[name] = read_imported(folder)
        except NotAnAdapter as exc:
            raise UserError([recipe.problem(where, str(exc))]) from None
        misfits = fit_problems(found[name], config, arch, ref.id) if config and arch else []
        if misfits:
            raise UserError([recipe.problem(where, text) for text in misfits])
        console.say(
            f"adapter {name}: trained elsewhere, r={found[name].r} on {','.join(found[name].modules)} "
            f"from {display_path(found[name].folder)}"
        )
    return found


# Fewer training rows than this (after the eval/test split) teach an adapter little beyond the rows
# themselves: it memorizes them within a few steps, and the held-out loss, measured on a row or two,
# cannot tell learning from noise. Only known once the data is read, so it is a run-time warning.
MIN_TRAIN_ROWS = 16


def small_data_warning(data: PreparedDataset) -> str | None:
    """A warning when ``data`` has too few training rows to learn from (MIN_TRAIN_ROWS), else None."""
    if data.train_rows >= MIN_TRAIN_ROWS:
        return None
    return (
        f"warning: data {data.name}: only {data.train_rows} training rows after the eval/test split, fewer than "
        f"{MIN_TRAIN_ROWS}: an adapter memorizes so few rows instead of learning the task, and the held-out loss "
        f"on {data.eval_rows} row(s) cannot show it; add rows (or lower eval_split)"
    )


def prepare_data(recipe: Recipe, workspace: Workspace, console: Console) -> dict[str, PreparedDataset]:
    """Check, normalize and split every dataset an adapter trains on."""
    prepared = {}
    used = {recipe.spec.dataset_of(adapter) for adapter in recipe.spec.adapters}
    trained_on = {adapter.dataset for adapter in recipe.spec.adapters.values()}
    for name in sorted(used - {None}):
        data = prepare_dataset(recipe, name, workspace.data)
        prepared[name] = data
        how = "detected" if data.detected else "declared"
        held_out = f"{data.rows['eval']} eval" + (f", {data.rows['test']} test" if data.rows["test"] else "")
        console.say(
            f"data {name}: {data.train_rows} train rows, {held_out}; format {data.format} ({how}) from {data.source}"
        )
        warning = small_data_warning(data) if name in trained_on else None
        if warning:
            console.detail(warning)
        report = data.report
        removed = {
            "invalid rows skipped": len(report.skipped),
            "below the rating filter": report.rating_filtered,
            **{k.replace("_", " "): v for k, v in report.cleaning.items()},
        }
        if any(removed.values()):
            console.detail(", ".join(f"{v} {k}" for k, v in removed.items() if v))
        for problem in report.torn:
            console.detail(problem.format())
        for problem in report.skipped[:5]:
            console.detail(f"skipped {problem.format()}")
    return prepared


def plan_recipe(recipe: Recipe, console: Console, model_log: Path | None = None, processes: int = 1) -> Plan:
    """Resolve the model, prepare the data and compile every Olive workflow; write the configs.

    ``model_log``: make the model available for running (a dry run leaves it out). ``processes``: how
    many processes train each adapter together."""
    workspace = Workspace.of(recipe)
    ref, facts = prepare_model(model_ref(recipe), console, model_log)
    imported = prepare_imported(recipe, ref, facts, console)
    datasets = prepare_data(recipe, workspace, console)
    jobs = compile_recipe(recipe, ref, facts, datasets, workspace, imported, processes)
    files = {workspace.compiled / job.target / f"{job.adapter}.json": job.to_json() for job in jobs}
    files[workspace.compiled / PACKAGE_CONFIG_FILE] = json.dumps(package_config(), indent=2) + "\n"
    for path, text in files.items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_text_atomic(path, text)
    written = [data.folder for data in datasets.values()] + list(files)
    return Plan(recipe, workspace, ref, facts, datasets, imported, jobs, written)
