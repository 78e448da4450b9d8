"""Callbacks on the transformers Trainer that Olive's LoRA pass builds.

Olive builds its Trainer without a way to pass callbacks; transformers adds every entry of
``transformers.trainer.DEFAULT_CALLBACKS`` to each Trainer it creates, so olive-flows' callbacks
(the training log, early stopping, a sweep's pruning) sit there while a pass trains.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, TypeVar

C = TypeVar("C")


@contextlib.contextmanager
def on_every_trainer(callback: C) -> Iterator[C]:
    """Add ``callback`` to every transformers Trainer created inside the block."""
    from transformers import trainer

    trainer.DEFAULT_CALLBACKS.append(callback)
    try:
        yield callback
    finally:
        trainer.DEFAULT_CALLBACKS.remove(callback)


def attached(kind: type[Any]) -> Any | None:
    """The callback of type ``kind`` now attached to every Trainer, if any."""
    from transformers import trainer

    return next((c for c in trainer.DEFAULT_CALLBACKS if isinstance(c, kind)), None)
