"""Run one compiled job (an adapter trained and exported for a target) and report on it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from olive_flows import metadata
from olive_flows.compile.workflow import TRAIN, Job
from olive_flows.console import Console, Progress
from olive_flows.data.audit import tokenization_stats
from olive_flows.recipe.model import Recipe
from olive_flows.run import peft


def run_job(job: Job, recipe: Recipe, run_dir: Path, console: Console, timings: dict[str, float]) -> Path:
    """Run one compiled workflow (train, export) with its log in ``run_dir`` and training progress on
    the console; record its time in ``timings``; return the folder of Olive's output model."""
    from olive_flows.run.olive import run_workflow
    from olive_flows.run.training_log import record_training

    train = job.config["passes"].get(TRAIN)
    target, adapter = recipe.spec.targets[job.target], recipe.spec.adapters[job.adapter]
    export = f"{target.precision} export for {target.execution_provider}"
    if job.imported:
        modules = ",".join(job.imported.modules)
        console.say(f"{job.name}: LoRA r={job.imported.r} on {modules}, trained elsewhere ({adapter.from_}); {export}")
    else:
        drop_unusable_checkpoints(Path(train["training_args"]["output_dir"]))
        method = metadata.method(adapter.method)["olive_pass"]
        console.say(f"{job.name}: {method} r={train['r']} on {','.join(train['target_modules'])}, then {export}")
    (run_dir / "olive").mkdir(exist_ok=True)
    (run_dir / "olive" / f"{job.target}-{job.adapter}.json").write_text(job.to_json(), encoding="utf-8")
    resume = resume_point(Path(train["training_args"]["output_dir"])) if train else None
    if resume:
        console.detail(
            f"resuming training at step {resume[1]} of {resume[2]} from {resume[0]}: an earlier run of this same "
            "training (same data, model and settings; the checkpoint folder is named by them) stopped there"
        )
    started = time.monotonic()
    trackers = tracker_environment(adapter.training.report_to, run_dir, recipe.name, job.adapter)
    events = PassReporter(console, job)
    with record_training(console, f"{job.adapter} training") as recorder, environment(trackers):
        output = run_workflow(job.name, job.config, run_dir / "logs" / f"{job.target}-{job.adapter}.log", events)
    events.close()
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
    console.detail(f"done in {timings[job.name]:.0f} s")
    return output


class PassReporter:
    """Tells the console what each pass of a job does: training shows its own progress (see
    training_log.py); a pass taken from Olive's cache says so and why; the export passes after it
    share one progress line (passes done, rate, ETA)."""

    def __init__(self, console: Console, job: Job):
        self.console, self.job = console, job
        self.export_passes = [name for name in job.config["passes"] if name != TRAIN]
        self.progress: Progress | None = None

    def __call__(self, event: str, name: str, seconds: float) -> None:
        kind = self.job.config["passes"].get(name, {}).get("type", name)
        if event == "cached" and name == TRAIN:
            self.console.detail(
                f"{name} ({kind}): from Olive's cache: an earlier run trained this adapter with the same data, "
                "model and settings"
            )
        elif name != TRAIN and event == "start" and self.progress is None:
            self.progress = self.console.progress(f"{self.job.name} export", len(self.export_passes), "passes")
        elif name != TRAIN and event in {"cached", "done"} and self.progress:
            self.progress.update(
                1, note=f"{name} ({kind}) " + ("from Olive's cache" if event == "cached" else f"{seconds:.0f} s")
            )

    def close(self) -> None:
        if self.progress:
            self.progress.close()


def resume_point(folder: Path) -> tuple[str, int, int] | None:
    """The checkpoint a training will resume from in ``folder``, its step and the training's total
    steps (from the trainer's own state), or None when it starts from scratch or its last checkpoint
    is the finished training (Olive's cache then has its result)."""
    states = sorted(folder.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[-1]))
    if not states:
        return None
    state = json.loads(states[-1].read_text(encoding="utf-8"))
    if state["global_step"] >= state["max_steps"]:
        return None
    return states[-1].parent.name, state["global_step"], state["max_steps"]


def drop_unusable_checkpoints(folder: Path) -> None:
    """Remove what a killed training left that resuming would choke on: a checkpoint cut off while
    being written (the trainer writes trainer_state.json last), and a folder with no checkpoint at all
    (Olive refuses to train into a non-empty folder without one)."""
    for checkpoint in folder.glob("checkpoint-*"):
        if not (checkpoint / "trainer_state.json").is_file():
            shutil.rmtree(checkpoint)
    if folder.is_dir() and not any(folder.glob("checkpoint-*")):
        shutil.rmtree(folder)


def tracker_environment(trackers: Sequence[str], run_dir: Path, recipe: str, adapter: str) -> dict[str, str]:
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
