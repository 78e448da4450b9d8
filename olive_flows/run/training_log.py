"""Record the trainer's loss and learning rate as Olive trains, and show its progress on the console.

Olive builds its own transformers.Trainer, so there is no argument to pass a callback through.
transformers adds every entry of ``transformers.trainer.DEFAULT_CALLBACKS`` to each Trainer it
creates; the recorder is put there for the duration of one workflow and taken out afterwards.
The trainer itself prints every logged step to the job's log (its PrinterCallback), so the log
keeps the per-step detail while the console shows steps, rate, ETA and the latest loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from transformers import TrainerCallback

from olive_flows.callbacks import on_every_trainer
from olive_flows.console import Console, Progress


class TrainingRecorder(TrainerCallback):
    """Keeps every logged step (loss, eval_loss, learning_rate) and shows the training's progress."""

    def __init__(self, console: Console, label: str):
        self.console = console
        self.label = label
        self.history: list[dict[str, Any]] = []
        self.progress: Progress | None = None
        self.resumed_at = 0  # the step a resumed training started from (0: from scratch)

    def on_train_begin(self, args, state, control, **kwargs):
        self.resumed_at = state.global_step
        self.progress = self.console.progress(self.label, state.max_steps, "steps", done=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress:
            self.progress.update(state.global_step - self.progress.done)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        entry = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
        self.history.append(entry)
        if not self.progress:
            return
        if "eval_loss" in entry:
            self.progress.write(
                f"step {state.global_step:>4}/{state.max_steps}  held-out loss {entry['eval_loss']:.4f}"
            )
        elif "loss" in entry:
            self.progress.update(0, note=f"loss {entry['loss']:.4f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress:
            self.progress.close()
            self.progress = None


@contextlib.contextmanager
def record_training(console: Console, label: str) -> Iterator[TrainingRecorder]:
    """Attach a TrainingRecorder to every Trainer created inside the block."""
    with on_every_trainer(TrainingRecorder(console, label)) as recorder:
        yield recorder
