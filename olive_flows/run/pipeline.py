"""The whole run of a recipe: model -> data -> compile -> train and export -> package -> check.

Each step reports on the console; the noisy output of Olive, ModelBuilder and the trainer goes to
per-job log files in the run folder. A target's package is assembled and checked in a staging
folder and only then moved into place, so a failed run never leaves a broken package behind.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from olive_flows import metadata
from olive_flows.compile.workflow import Job, compile_recipe, provider_of
from olive_flows.data.prepare import PreparedDataset, prepare_dataset
from olive_flows.evaluate.check import check_package
from olive_flows.files import write_json
from olive_flows.models.resolve import ModelRef, model_facts, model_ref
from olive_flows.package.build import build_package, size_mb
from olive_flows.paths import display_path
from olive_flows.recipe.model import Recipe
from olive_flows.run.capture import output_to
from olive_flows.run.console import Console
from olive_flows.validate.problems import UserError
from olive_flows.workspace import Workspace

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass
class RunResult:
    """What a run produced: the package folder per target and the scores measured on each."""

    run_dir: Path
    packages: dict[str, Path] = field(default_factory=dict)
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)


def configure_environment(offline: bool) -> None:
    """Telemetry off; the Hugging Face hubs off when asked (or when nothing needs them)."""
    os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
    if offline:
        for name in OFFLINE_VARIABLES:
            os.environ[name] = "1"


def resolve_model(ref: ModelRef, console: Console, log_dir: Path) -> dict[str, Any]:
    """Make the base model available locally and return its model_type and layer count."""
    if ref.kind == "builtin":
        from olive_flows.models.builtin import materialize

        with output_to(log_dir / "model.log"):
            folder = materialize(ref.builtin_name)
        console.say(f"model {ref.id}: {display_path(folder)}")
    elif ref.kind == "hub" and os.environ.get("HF_HUB_OFFLINE") != "1":
        from huggingface_hub import hf_hub_download

        hf_hub_download(ref.path, "config.json", revision=ref.revision)
    facts = model_facts(ref)
    if not facts or not facts.get("num_hidden_layers"):
        raise UserError(
            f"cannot read config.json of model '{ref.id}': it is not in the Hugging Face cache and the hub is "
            "offline; run once with network access or point model.id at a local folder"
        )
    return facts


def prepare_data(recipe: Recipe, workspace: Workspace, console: Console) -> dict[str, PreparedDataset]:
    """Check and split every dataset an adapter trains on."""
    used = sorted({recipe.adapters[a]["dataset"] for a in recipe.adapters})
    prepared = {}
    for name in used:
        data = prepare_dataset(recipe, name, workspace.data)
        prepared[name] = data
        console.say(
            f"data {name}: {data.train_rows} train rows, {data.eval_rows} held out ({display_path(data.source)})"
        )
    return prepared


def compile_jobs(
    recipe: Recipe, console: Console, log_dir: Path
) -> tuple[list[Job], dict[str, PreparedDataset], ModelRef]:
    """Resolve the model, prepare the data and compile every Olive workflow of ``recipe``."""
    workspace = Workspace.of(recipe)
    ref = model_ref(recipe)
    facts = resolve_model(ref, console, log_dir)
    datasets = prepare_data(recipe, workspace, console)
    jobs = compile_recipe(recipe, ref, facts["num_hidden_layers"], datasets, workspace)
    for job in jobs:
        path = workspace.compiled / job.target / f"{job.adapter}.json"
        if not path.is_file() or path.read_text() != job.to_json():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(job.to_json())
    return jobs, datasets, ref


def run_recipe(recipe: Recipe, *, offline: bool = False, console: Console | None = None) -> RunResult:
    """Run every step of ``recipe`` and return where its packages are."""
    console = console or Console()
    configure_environment(offline or model_ref(recipe).kind != "hub")
    workspace = Workspace.of(recipe)
    run_dir = workspace.runs / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "recipe.resolved.json", recipe.data)
    console.say(f"recipe {recipe.name} ({recipe.source}); run folder {display_path(run_dir)}")

    jobs, datasets, ref = compile_jobs(recipe, console, run_dir / "logs")
    timings: dict[str, float] = {}
    outputs: dict[str, dict[str, tuple[Job, Path]]] = {}
    for job in jobs:
        outputs.setdefault(job.target, {})[job.adapter] = (job, _run_job(job, workspace, run_dir, console, timings))
    write_json(run_dir / "timings.json", timings)

    result = RunResult(run_dir)
    for target, adapter_outputs in outputs.items():
        provider = metadata.target_profile(provider_of(recipe.targets[target]))["genai_provider"]
        check = partial(check_package, recipe, target, datasets=datasets, genai_provider=provider, console=console)
        package, scores = build_package(recipe, target, adapter_outputs, datasets, ref, workspace, check)
        console.say(
            f"package {target}: {display_path(package)} ({size_mb(package):.0f} MB, {len(adapter_outputs)} adapters)"
        )
        result.packages[target] = package
        result.scores[target] = scores
    return result


def _run_job(job: Job, workspace: Workspace, run_dir: Path, console: Console, timings: dict[str, float]) -> Path:
    from olive_flows.run.olive import run_workflow
    from olive_flows.run.training_log import record_training

    passes = job.config["passes"]
    train, build = passes["train"], passes["build"]
    console.say(
        f"{job.name}: {train['type']} r={train['r']} on {','.join(train['target_modules'])}, "
        f"then {build['precision']} export for {job.config['systems']['target']['accelerators'][0]['execution_providers'][0]}"
    )
    (run_dir / "olive").mkdir(exist_ok=True)
    (run_dir / "olive" / f"{job.target}-{job.adapter}.json").write_text(job.to_json())
    started = time.monotonic()
    with record_training(console) as recorder:
        output = run_workflow(job.name, job.config, run_dir / "logs" / f"{job.target}-{job.adapter}.log")
    timings[job.name] = round(time.monotonic() - started, 1)
    history_file = workspace.job(job.target, job.adapter) / "training.json"
    if recorder.history:
        write_json(history_file, recorder.history)
    else:
        console.detail("training reused from Olive's cache")
    console.detail(f"done in {timings[job.name]:.0f} s")
    return output
