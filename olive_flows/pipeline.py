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
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from olive_flows.compile.plan import needs_hub, plan_recipe
from olive_flows.compile.workflow import Job
from olive_flows.console import Console
from olive_flows.data.audit import tokenization_stats, write_audit
from olive_flows.evaluate.assess import NOT_VERIFIED, assess_package, score_current
from olive_flows.evaluate.report import overfitting
from olive_flows.files import write_json, write_text_atomic
from olive_flows.layout import EVAL, MANIFEST, REPORT_HTML, TRAINING_LOG, Workspace
from olive_flows.package.assemble import PackageError
from olive_flows.package.build import PackageCheck, build_package, size_mb
from olive_flows.package.manifest import PLAN, file_table, plan_fingerprint, recipe_hash, up_to_date
from olive_flows.package.promotion import NotPromoted
from olive_flows.paths import display_path
from olive_flows.problems import UserError
from olive_flows.recipe.model import Recipe
from olive_flows.run import peft
from olive_flows.run.job import run_job
from olive_flows.validate.environment import environment_problems
from olive_flows.world import RUN_DIR_VARIABLE, joined

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
NOT_VERIFIED_HERE = 10  # exit code: every package was built, and one or more could not be run on this machine


@dataclass
class RunResult:
    """What a run produced: the package folder per target and the scores measured on each."""

    run_dir: Path
    packages: dict[str, Path] = field(default_factory=dict)
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    unverified: dict[str, str] = field(default_factory=dict)  # target -> why its package was not checked here

    def exit_code(self, console: Console) -> int:
        """0, or NOT_VERIFIED_HERE after a last line naming each package this machine could not check."""
        for target, why in self.unverified.items():
            console.say(
                f"package {target}: built but NOT VERIFIED here ({why}): it has no eval.json; run olive-flows "
                f"verify and olive-flows eval on it where its provider runs (exit code {NOT_VERIFIED_HERE})"
            )
        return NOT_VERIFIED_HERE if self.unverified else 0


def configure_environment(offline: bool) -> None:
    """Telemetry off; the Hugging Face hubs off when asked (or when nothing needs them)."""
    os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
    if offline:
        for name in OFFLINE_VARIABLES:
            os.environ[name] = "1"


def run_recipe(recipe: Recipe, *, offline: bool = False, console: Console | None = None) -> RunResult:
    """Run every step of ``recipe`` and return where its packages are. In a data-parallel run this is
    rank 0's part (olive_flows/world.py); the other ranks train with it."""
    console = console or Console()
    ranks = joined()
    processes = ranks.world.size if ranks else 1
    problems = list(environment_problems(recipe, processes))
    if problems:
        raise UserError(problems)
    for warning in recipe.warnings:
        console.say(warning.format())
    configure_environment(offline or not needs_hub(recipe))
    workspace = Workspace.of(recipe)
    given = os.environ.get(RUN_DIR_VARIABLE)
    with contextlib.nullcontext() if given else workspace.locked():  # the launcher holds the lock
        return _run(recipe, workspace, console, Path(given) if given else None)


def _run(recipe: Recipe, workspace: Workspace, console: Console, run_dir: Path | None) -> RunResult:
    for stale in workspace.root.glob(".*.staging-*"):  # left by a run that was killed (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    run_dir = run_dir or workspace.new_run()
    write_json(run_dir / "recipe.resolved.json", recipe.data)
    console.say(f"recipe {recipe.name} ({recipe.source}); run folder {display_path(run_dir)}")
    ranks = joined()
    if ranks:
        ranks.tell({"logs": str(run_dir / "logs")})
        console.say(
            f"{ranks.world.size} processes train each adapter together ({ranks.world.launcher}); this is rank 0, "
            f"the others log to {display_path(run_dir / 'logs')}/rank-<rank>.log"
        )

    timings: dict[str, float] = {}  # seconds per stage, in the order the run went through them (timings.json)
    started = time.monotonic()
    plan = plan_recipe(
        recipe, console, model_log=run_dir / "logs" / "model.log", processes=ranks.world.size if ranks else 1
    )
    timings["prepare model and data"] = round(time.monotonic() - started, 1)
    plan_sha256 = plan_fingerprint(recipe_hash(recipe.data), [job.config for job in plan.jobs])
    targets = list(dict.fromkeys(job.target for job in plan.jobs))
    adapters = list(dict.fromkeys(job.adapter for job in plan.jobs))
    if _unchanged(recipe, workspace, targets, adapters, plan_sha256):
        console.say(
            "nothing changed since the packages were built (recipe, model, data, olive-flows and its "
            "dependencies): Olive is not started"
        )
        _write_timings(run_dir, timings)
        _report_adapters(workspace, plan.jobs, console)
        result = RunResult(run_dir)
        for target in targets:
            exported = sum(job.target == target for job in plan.jobs)
            _report_package(console, result, target, workspace.package(target), None, exported)
        return result

    outputs: dict[str, dict[str, tuple[Job, Path]]] = {}
    trained: dict[str, Path] = {}
    for job in plan.jobs:
        output = run_job(job, recipe, run_dir, console, timings)
        outputs.setdefault(job.target, {})[job.adapter] = (job, output)
        adapter_dir = job.imported.folder if job.imported else peft.trained_adapter(output)
        if adapter_dir is None:
            raise PackageError(f"{job.name}: Olive's output names no trained adapter (see {output / 'footprint.json'})")
        trained[job.adapter] = adapter_dir
    _write_timings(run_dir, timings)
    for adapter, job in {job.adapter: job for job in plan.jobs}.items():
        dataset = recipe.spec.dataset_of(adapter)
        if dataset:  # the rows it trained on, or (trained elsewhere) is scored on
            write_audit(workspace.audit(adapter), plan.datasets[dataset], tokenization_stats(job.stats_path))
        peft.publish(trained[adapter], workspace.peft(adapter))
    write_json(workspace.published, {"plan": plan_sha256, "folders": _copies(recipe, workspace, adapters)})
    _report_adapters(workspace, plan.jobs, console)

    result = RunResult(run_dir)
    not_promoted: list[str] = []
    for target, adapter_outputs in outputs.items():
        log = run_dir / "logs" / f"eval-{target}.log"
        check = partial(assess_package, recipe, workspace=workspace, console=console, log=log)
        rescore = partial(score_current, recipe, workspace=workspace, console=console, log=log)
        evaluations = (f"evaluate {target}", f"evaluate {target}: current package")  # timings.json stages
        started, timings[f"package {target}"] = time.monotonic(), 0.0
        try:
            package, scores = build_package(
                recipe,
                target,
                adapter_outputs,
                plan.datasets,
                plan.model,
                workspace,
                _timed(check, timings, evaluations[0]),
                plan_sha256,
                _timed(rescore, timings, evaluations[1]),
            )
        except NotPromoted as exc:  # the other targets still get their chance
            console.say(str(exc))
            not_promoted.append(str(exc))
            continue
        finally:
            evaluated = sum(timings.get(name, 0.0) for name in evaluations)
            timings[f"package {target}"] = round(time.monotonic() - started - evaluated, 1)
            _write_timings(run_dir, timings)
        _report_package(console, result, target, package, scores, len(adapter_outputs))
    if not_promoted:
        raise NotPromoted(" / ".join(not_promoted))
    return result


def _unchanged(recipe: Recipe, workspace: Workspace, targets: list[str], adapters: list[str], plan_sha256: str) -> bool:
    """Whether every target's package was built by a run with this plan and is intact, and each
    adapter's data audit and PEFT copy hold what a run with this plan wrote: then the run has
    nothing to do."""
    if not all(up_to_date(workspace.package(target), plan_sha256, PLAN) for target in targets):
        return False
    published = json.loads(workspace.published.read_text(encoding="utf-8")) if workspace.published.is_file() else {}
    return published == {"plan": plan_sha256, "folders": _copies(recipe, workspace, adapters)}


def _copies(recipe: Recipe, workspace: Workspace, adapters: list[str]) -> dict[str, dict[str, Any]]:
    """The sha256 and size of every file in each adapter's PEFT copy and (where it has a dataset)
    data audit."""
    folders = [workspace.peft(a) for a in adapters] + [
        workspace.audit(a) for a in adapters if recipe.spec.dataset_of(a)
    ]
    return {folder.relative_to(workspace.root).as_posix(): file_table(folder) for folder in folders}


def _report_adapters(workspace: Workspace, jobs: list[Job], console: Console) -> None:
    """Where the data audit and the PEFT adapters are; a warning for each adapter whose training log
    (kept with its PEFT copy) shows over-fitting."""
    console.say(
        f"data audit: {display_path(workspace.root / '_data')}; PEFT adapters: {display_path(workspace.root / '_peft')}"
    )
    for adapter in dict.fromkeys(job.adapter for job in jobs if not job.imported):
        log = workspace.peft(adapter) / TRAINING_LOG
        warning = overfitting(json.loads(log.read_text(encoding="utf-8"))) if log.is_file() else None
        if warning:
            console.say(f"warning: adapter {adapter}: {warning}")


def _report_package(
    console: Console, result: RunResult, target: str, package: Path, scores: dict[str, Any] | None, adapters: int
) -> None:
    """Say where ``target``'s package is and add it to ``result``; ``scores`` None: it was up to date
    (its eval.json holds them)."""
    if scores is None:
        console.say(f"package {target}: up to date (built from the same inputs, files intact); not rebuilt")
        eval_file = package / EVAL
        scores = json.loads(eval_file.read_text(encoding="utf-8")) if eval_file.is_file() else {}
    console.say(
        f"package {target}: {display_path(package)} ({size_mb(package):.0f} MB, {adapters} adapters); report: {display_path(package / REPORT_HTML)}"
    )
    result.packages[target] = package
    result.scores[target] = scores
    smoke = json.loads((package / MANIFEST).read_text(encoding="utf-8")).get("smoke_check", "")
    if smoke.startswith(NOT_VERIFIED):
        result.unverified[target] = smoke.removeprefix(NOT_VERIFIED).split(";")[0]


def _write_timings(run_dir: Path, timings: dict[str, float]) -> None:
    """timings.json: seconds per stage, in the order of the stages (not sorted by name)."""
    write_text_atomic(run_dir / "timings.json", json.dumps(timings, indent=2) + "\n")


def _timed(check: PackageCheck, timings: dict[str, float], name: str) -> PackageCheck:
    """``check`` (a package's evaluation), its time recorded in ``timings`` as ``name``."""

    def timed(package: Path, manifest: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        try:
            return check(package, manifest)
        finally:
            timings[name] = round(time.monotonic() - started, 1)

    return timed
