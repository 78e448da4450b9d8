"""The whole run of a recipe: model -> data -> compile -> train and export -> package -> check.

Each step reports on the console; the noisy output of Olive, ModelBuilder and the trainer goes to
per-job log files in the run folder. A target's package is assembled and checked in a staging
folder and only then moved into place, so a failed run never leaves a broken package behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from olive_flows import metadata
from olive_flows.compile.plan import needs_hub, plan_recipe
from olive_flows.compile.workflow import Job, provider_of
from olive_flows.data.audit import tokenization_stats, write_audit
from olive_flows.evaluate.check import check_package
from olive_flows.evaluate.evaluation import EvalSubject, read_rows
from olive_flows.files import write_json
from olive_flows.package import peft
from olive_flows.package.assemble import PackageError
from olive_flows.package.build import build_package, size_mb
from olive_flows.paths import display_path
from olive_flows.recipe.model import Recipe
from olive_flows.run.console import Console
from olive_flows.validate.environment import environment_problems
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


def run_recipe(recipe: Recipe, *, offline: bool = False, console: Console | None = None) -> RunResult:
    """Run every step of ``recipe`` and return where its packages are."""
    console = console or Console()
    problems = list(environment_problems(recipe))
    if problems:
        raise UserError(problems)
    for warning in recipe.warnings:
        console.say(warning.format())
    configure_environment(offline or not needs_hub(recipe))
    workspace = Workspace.of(recipe)
    with workspace.locked():
        return _run(recipe, workspace, console)


def _run(recipe: Recipe, workspace: Workspace, console: Console) -> RunResult:
    for stale in workspace.root.glob(".*.staging-*"):  # left by a run that was killed (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    run_dir = workspace.runs / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "recipe.resolved.json", recipe.data)
    console.say(f"recipe {recipe.name} ({recipe.source}); run folder {display_path(run_dir)}")

    plan = plan_recipe(recipe, console, model_log=run_dir / "logs" / "model.log")
    timings: dict[str, float] = {}
    outputs: dict[str, dict[str, tuple[Job, Path]]] = {}
    trained: dict[str, Path] = {}
    for job in plan.jobs:
        output = _run_job(job, recipe, run_dir, console, timings)
        outputs.setdefault(job.target, {})[job.adapter] = (job, output)
        adapter_dir = peft.trained_adapter(output)
        if adapter_dir is None:
            raise PackageError(f"{job.name}: Olive's output names no trained adapter (see {output / 'footprint.json'})")
        trained[job.adapter] = adapter_dir
    write_json(run_dir / "timings.json", timings)
    for adapter, job in {job.adapter: job for job in plan.jobs}.items():
        write_audit(
            workspace.audit(adapter),
            plan.datasets[recipe.adapters[adapter]["dataset"]],
            tokenization_stats(job.stats_path),
        )
        peft.publish(trained[adapter], workspace.peft(adapter))
    console.say(
        f"data audit: {display_path(workspace.root / '_data')}; PEFT adapters: {display_path(workspace.root / '_peft')}"
    )

    result = RunResult(run_dir)
    for target, adapter_outputs in outputs.items():
        spec = recipe.targets[target]
        subject = EvalSubject(
            rows={
                a: read_rows(
                    plan.datasets[recipe.adapters[a]["dataset"]].scored_file, recipe.data["evaluation"]["max_rows"]
                )
                for a in adapter_outputs
            },
            dataset_of={a: recipe.adapters[a]["dataset"] for a in adapter_outputs},
            precision=spec["precision"],
            peft={a: workspace.peft(a) for a in adapter_outputs},
            model_path=plan.model.path,
            trust_remote_code=plan.model.trust_remote_code,
        )
        provider = metadata.target_profile(provider_of(spec))["genai_provider"]
        check = partial(
            check_package,
            recipe,
            target,
            subject=subject,
            genai_provider=provider,
            console=console,
            log=run_dir / "logs" / f"eval-{target}.log",
        )
        package, scores = build_package(recipe, target, adapter_outputs, plan.datasets, plan.model, workspace, check)
        if scores is None:
            console.say(f"package {target}: up to date (built from the same inputs, files intact); not rebuilt")
            eval_file = package / "eval.json"
            scores = json.loads(eval_file.read_text()) if eval_file.is_file() else {}
        console.say(
            f"package {target}: {display_path(package)} ({size_mb(package):.0f} MB, {len(adapter_outputs)} adapters); report: {display_path(package / 'report.html')}"
        )
        result.packages[target] = package
        result.scores[target] = scores
    return result


def _run_job(job: Job, recipe: Recipe, run_dir: Path, console: Console, timings: dict[str, float]) -> Path:
    from olive_flows.run.olive import run_workflow
    from olive_flows.run.training_log import record_training

    train = job.config["passes"]["train"]
    _drop_unusable_checkpoints(Path(train["training_args"]["output_dir"]))
    target = recipe.targets[job.target]
    method = metadata.load("methods")[recipe.adapters[job.adapter]["method"]]["olive_pass"]
    console.say(
        f"{job.name}: {method} r={train['r']} on {','.join(train['target_modules'])}, "
        f"then {target['precision']} export for {provider_of(target)}"
    )
    (run_dir / "olive").mkdir(exist_ok=True)
    (run_dir / "olive" / f"{job.target}-{job.adapter}.json").write_text(job.to_json())
    started = time.monotonic()
    trackers = tracker_environment(
        recipe.adapters[job.adapter]["training"]["report_to"], run_dir, recipe.name, job.adapter
    )
    with record_training(console) as recorder, environment(trackers):
        output = run_workflow(job.name, job.config, run_dir / "logs" / f"{job.target}-{job.adapter}.log")
    timings[job.name] = round(time.monotonic() - started, 1)
    if recorder.history:
        adapter_dir = peft.trained_adapter(output)
        if adapter_dir:
            peft.record_history(adapter_dir, recorder.history)
        stats = tokenization_stats(job.stats_path)
        console.detail(
            f"trained on {stats['examples']} examples: {stats['learned_tokens']} of {stats['tokens']} tokens learned "
            f"(loss on {stats['loss_on']}), {len(stats['truncated_rows'])} truncated to {stats['max_seq_len']} tokens, "
            f"{len(stats['dropped_no_learned_token']) + len(stats['dropped_by_length_filter'])} dropped"
        )
    else:
        console.detail("training reused from Olive's cache")
    console.detail(f"done in {timings[job.name]:.0f} s")
    return output


def _drop_unusable_checkpoints(folder: Path) -> None:
    """Remove what a killed training left that resuming would choke on: a checkpoint cut off while
    being written (the trainer writes trainer_state.json last), and a folder with no checkpoint at all
    (Olive refuses to train into a non-empty folder without one)."""
    for checkpoint in folder.glob("checkpoint-*"):
        if not (checkpoint / "trainer_state.json").is_file():
            shutil.rmtree(checkpoint)
    if folder.is_dir() and not any(folder.glob("checkpoint-*")):
        shutil.rmtree(folder)


def tracker_environment(trackers: list[str], run_dir: Path, recipe: str, adapter: str) -> dict[str, str]:
    """Environment that sends the trainer's TensorBoard and MLflow logs to the run folder."""
    found = {}
    if "tensorboard" in trackers:
        found["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard" / adapter)
    if "mlflow" in trackers:
        found["MLFLOW_TRACKING_URI"] = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").as_uri()
        found["MLFLOW_EXPERIMENT_NAME"] = os.environ.get("MLFLOW_EXPERIMENT_NAME") or recipe
    return found


@contextlib.contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block, then restore them."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
