"""Record the trainer's loss and learning rate as Olive trains, and show progress on the console.

Olive builds its own transformers.Trainer, so there is no argument to pass a callback through.
transformers adds every entry of ``transformers.trainer.DEFAULT_CALLBACKS`` to each Trainer it
creates; the recorder is put there for the duration of one workflow and taken out afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from transformers import TrainerCallback, trainer

from olive_flows.console import Console

PROGRESS_LINES = 6  # loss lines shown per training run


class TrainingRecorder(TrainerCallback):
    """Keeps every logged step (loss, eval_loss, learning_rate) and prints a few of them."""

    def __init__(self, console: Console):
        self.console = console
        self.history: list[dict[str, Any]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        entry = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
        self.history.append(entry)
        every = max(1, state.max_steps // PROGRESS_LINES)
        if "eval_loss" in entry:
            self.console.detail(
                f"step {state.global_step:>4}/{state.max_steps}  held-out loss {entry['eval_loss']:.4f}"
            )
        elif "loss" in entry and (state.global_step % every == 0 or state.global_step == 1):
            self.console.detail(
                f"step {state.global_step:>4}/{state.max_steps}  loss {entry['loss']:.4f}  lr {entry.get('learning_rate', 0):.2e}"
            )


@contextlib.contextmanager
def record_training(console: Console) -> Iterator[TrainingRecorder]:
    """Attach a TrainingRecorder to every Trainer created inside the block."""
    recorder = TrainingRecorder(console)
    trainer.DEFAULT_CALLBACKS.append(recorder)
    try:
        yield recorder
    finally:
        trainer.DEFAULT_CALLBACKS.remove(recorder)
