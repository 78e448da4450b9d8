"""Run a sweep: an Optuna study whose trials are runs of the recipe with the searched fields set.

Every trial runs in the recipe's own output folder, one after the other (the run lock sees to that):
the data splits (content-addressed under ``_work/data/``), the prepared base model and Olive's pass
cache (``_work/olive-cache/``) are shared, so a trial only trains and exports what its values change,
and ``--package-best`` gets the winner's training from the cache. The study is stored in SQLite under
``_work/sweep/study.db`` (or any database Optuna takes, ``--storage``), so an interrupted sweep
resumes: trials that finished or were pruned count toward ``trials``; one cut short is run again.

Pruning: while a trial trains, a callback (added to every transformers Trainer, as run/training_log.py
does) reports each held-out loss of a searched adapter to the trial; when Optuna's median pruner says
the trial is worse than the median of earlier ones at that step, the callback stops the run.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olive_flows.callbacks import attached, on_every_trainer
from olive_flows.console import Console
from olive_flows.layout import TRAINING_LOG, RunInProgress, Workspace
from olive_flows.problems import Location, Problem, UserError
from olive_flows.recipe.model import Recipe
from olive_flows.sweep.space import Sweep, override, read_sweep
from olive_flows.validate.load import load_recipe

STEPS_PER_ADAPTER = 1_000_000  # reported step = adapter index * this + training step: one axis per adapter


class TrialStopped(ValueError):
    """Raised inside the trainer to end a pruned trial's run (a ValueError, which Olive passes on)."""


class TrialFailed(Exception):
    """A trial's run failed (an Olive pass, the package checks): the study records it and goes on."""


@dataclass
class SweepResult:
    study: Any  # optuna.Study
    sweep: Sweep
    folder: Path
    new_trials: int


def study_folder(recipe: Recipe) -> Path:
    return Workspace.of(recipe).work / "sweep"


class PruningCallback:
    """Reports each held-out loss of a searched adapter to the trial; stops training when pruned."""

    def __init__(self, trial: Any, adapters: list[str]):
        self.trial, self.adapters = trial, adapters
        self.index: int | None = None  # the adapter now training, among ``adapters`` (None: not searched)
        self.pruned_at: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        from olive_flows.run.training_log import TrainingRecorder

        recorder = attached(TrainingRecorder)
        adapter = recorder.label.removesuffix(" training") if recorder else ""
        self.index = self.adapters.index(adapter) if adapter in self.adapters else None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.index is None or not metrics or "eval_loss" not in metrics:
            return
        self.trial.report(float(metrics["eval_loss"]), self.index * STEPS_PER_ADAPTER + state.global_step)
        if self.trial.should_prune():
            self.pruned_at = state.global_step
            raise TrialStopped(f"pruned at step {state.global_step}: held-out loss {metrics['eval_loss']:.4f}")

    def __getattr__(self, name: str):  # every other event of a TrainerCallback: nothing to do
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


@contextlib.contextmanager
def pruning(trial: Any, adapters: list[str]) -> Iterator[PruningCallback]:
    with on_every_trainer(PruningCallback(trial, adapters)) as callback:
        yield callback


def objective_value(sweep: Sweep, recipe: Recipe, scores: dict[str, Any]) -> float:
    """The trial's objective: the mean last held-out loss of the searched adapters, or the metric of
    the recipe's first target's package."""
    if sweep.metric == "eval_loss":
        losses = []
        for adapter in sweep.adapters(recipe):
            log = Workspace.of(recipe).peft(adapter) / TRAINING_LOG
            history = json.loads(log.read_text(encoding="utf-8")) if log.is_file() else []
            values = [entry["eval_loss"] for entry in history if "eval_loss" in entry]
            if not values:
                raise TrialFailed(f"adapter {adapter} recorded no held-out loss (does its dataset hold rows out?)")
            losses.append(values[-1])
        return statistics.fmean(losses)
    adapter, _, metric = sweep.metric.partition("/")
    target = next(t for t in recipe.targets if t in scores)
    entry = scores[target]["adapters"][adapter]
    value = entry["perplexity"]["onnx"] if metric == "perplexity" else entry["metrics"][metric]
    if value is None:
        raise TrialFailed(f"{sweep.metric} was not measured on package {target}")
    return float(value)


def make_sampler(sweep: Sweep) -> Any:
    import optuna

    if sweep.sampler == "grid":
        return optuna.samplers.GridSampler(sweep.grid())
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler()
    return optuna.samplers.TPESampler()


def open_study(recipe: Recipe, sweep: Sweep, storage: str | None) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = study_folder(recipe)
    folder.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(
        storage=storage or f"sqlite:///{folder / 'study.db'}",
        study_name=recipe.name,
        direction=sweep.direction,
        sampler=make_sampler(sweep),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        load_if_exists=True,
    )


def finished(study: Any) -> list[Any]:
    """The trials that count toward ``trials``: complete or pruned."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def run_sweep(
    ref: str | Path,
    overrides: Sequence[str] = (),
    *,
    trials: int | None = None,
    storage: str | None = None,
    offline: bool = False,
    console: Console | None = None,
) -> SweepResult:
    """Run the recipe's sweep until ``trials`` (default: the recipe's) trials have finished."""
    import optuna

    console = console or Console()
    recipe = load_recipe(ref, overrides)
    sweep = read_sweep(recipe, ref, overrides)
    total = trials or sweep.trials
    if total < 1:
        raise UserError([Problem(Location("--trials"), "", "--trials must be at least 1")])
    study = open_study(recipe, sweep, storage)
    base = list(overrides)
    if recipe.data["promote"]["when"] == "better":  # every trial's package is scored, better or not
        base.append("promote.when=always")
    from olive_flows.pipeline import run_recipe  # heavy imports only once the sweep is valid

    def objective(trial: optuna.Trial) -> float:
        values = {path: parameter.suggest(trial) for path, parameter in sweep.parameters.items()}
        trial_overrides = [*base, *(override(path, value) for path, value in values.items())]
        console.say(f"trial {trial.number}: " + " ".join(override(p, v) for p, v in values.items()))
        trial_recipe = load_recipe(ref, trial_overrides)
        with pruning(trial, sweep.adapters(trial_recipe)) as callback:
            try:
                result = run_recipe(trial_recipe, offline=offline, console=console)
            except (UserError, RunInProgress):
                raise
            except Exception as exc:
                if callback.pruned_at is not None:
                    console.say(f"trial {trial.number}: pruned at training step {callback.pruned_at}")
                    raise optuna.TrialPruned() from exc
                if getattr(exc, "exit_code", None) is None:
                    raise
                console.say(f"trial {trial.number} failed: {exc}")
                raise TrialFailed(str(exc)) from exc
        trial.set_user_attr("run_dir", str(result.run_dir))
        value = objective_value(sweep, trial_recipe, result.scores)
        console.say(f"trial {trial.number}: {sweep.metric} {value:.4f}")
        return value

    remaining = max(0, total - len(finished(study)))
    if remaining == 0:
        console.say(f"the study already has {len(finished(study))} finished trials (of {total}): none run")
    new = 0
    while len(finished(study)) < total:
        before = len(study.trials)
        study.optimize(objective, n_trials=1, catch=(TrialFailed,))
        new += 1
        if len(study.trials) == before or _grid_done(study, sweep):
            break
        if new >= 3 * total:  # trials that keep failing do not count; stop rather than retry forever
            break
    return SweepResult(study, sweep, study_folder(recipe), new)


def run_workers(
    ref: str | Path,
    overrides: Sequence[str],
    jobs: int,
    trials: int | None,
    storage: str | None,
    offline: bool,
    console: Console | None = None,
) -> SweepResult:
    """``--jobs J``: J sweep processes sharing one study, each with its own output folder under the
    study's (its own data splits and Olive cache: one recipe folder admits one run at a time). Each
    starts a trial while the study has fewer than ``trials`` finished, so up to J - 1 more may finish."""
    console = console or Console()
    recipe = load_recipe(ref, overrides)
    sweep = read_sweep(recipe, ref, overrides)
    folder = study_folder(recipe)
    storage = storage or f"sqlite:///{folder / 'study.db'}"
    study = open_study(recipe, sweep, storage)  # created once, before the workers
    before = len(study.trials)
    options = ["--storage", storage, "--trials", str(trials or sweep.trials), "--worker"]
    options += ["--offline"] if offline else []
    workers = []
    for number in range(jobs):
        log = folder / f"worker-{number}.log"
        own = f"output.dir={folder / f'worker-{number}'}"  # overrides go before the options
        command = [sys.executable, "-m", "olive_flows", "sweep", str(ref), *overrides, own, *options]
        with open(log, "w", encoding="utf-8") as out:
            process = subprocess.Popen(command, stdout=out, stderr=out)
        workers.append((process, log))
    console.say(f"{jobs} sweep processes; their output: {', '.join(str(log) for _, log in workers)}")
    failed = [(log, process.wait()) for process, log in workers]
    failed = [(log, code) for log, code in failed if code != 0]
    if failed:
        tail = failed[0][0].read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        raise UserError(
            [
                Problem(
                    Location(str(failed[0][0])), "", f"a sweep process exited with {failed[0][1]}:\n" + "\n".join(tail)
                )
            ]
        )
    study = open_study(recipe, sweep, storage)
    return SweepResult(study, sweep, folder, len(study.trials) - before)


def _grid_done(study: Any, sweep: Sweep) -> bool:
    if sweep.sampler != "grid":
        return False
    size = 1
    for choices in sweep.grid().values():
        size *= len(choices)
    return len(finished(study)) >= size


def leaderboard(study: Any, sweep: Sweep) -> list[Any]:
    """Trials best first: complete ones by objective, then pruned, failed, running."""
    from optuna.trial import TrialState

    order = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.FAIL: 2}
    sign = 1 if sweep.direction == "minimize" else -1

    def key(trial: Any) -> tuple:
        value = trial.value if trial.state == TrialState.COMPLETE else None
        return (order.get(trial.state, 3), sign * value if value is not None else 0.0, trial.number)

    return sorted(study.get_trials(deepcopy=False), key=key)


def leaderboard_text(study: Any, sweep: Sweep) -> str:
    rows = [("trial", "state", sweep.metric, "parameters")]
    for trial in leaderboard(study, sweep):
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        params = " ".join(f"{path}={_short(v)}" for path, v in trial.params.items())
        rows.append((str(trial.number), trial.state.name.lower(), value, params))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
