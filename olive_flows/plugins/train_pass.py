"""Olive's LoRA, QLoRA and DoRA passes, computing logits only where the loss is taken.

A causal LM's LM head is a large share of a small model's training compute (49152 x 576 on
SmolLM2-135M, a fifth of its weights), yet with ``loss_on: assistant`` most positions carry no
label: the prompt, and the padding. These passes are Olive's own, with one change to the batches
Olive's collator builds: a boolean ``logits_to_keep`` that marks the positions whose next token is
learned, and those tokens as ``shift_labels``. transformers' causal LMs then project only those
hidden states onto the vocabulary and ForCausalLMLoss takes the labels as given, so the loss and
its gradients are the ones the whole-sequence computation gives (the same sum over the same
tokens), at a fraction of the LM head's cost. Models whose forward does not slice its hidden states
this way (remote code) get Olive's batches unchanged.

They also take two settings of their own, ``early_stopping_patience`` and ``early_stopping_threshold``
(compiled from ``training.early_stopping``): Olive builds its transformers.Trainer without a way to
pass callbacks, so while one of these passes trains, transformers' EarlyStoppingCallback sits in
``transformers.trainer.DEFAULT_CALLBACKS``, which every Trainer adds (as run/training_log.py does).

Olive cannot load a pass from a workflow config: plugins/__init__.py names these in the package config
it hands Olive (and writes next to the compiled configs for ``olive run``).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from typing import Any

from olive.passes.olive_pass import PassConfigParam
from olive.passes.pytorch.lora import DoRA, LoRA, QLoRA

from olive_flows.callbacks import on_every_trainer
from olive_flows.data.tokenize import IGNORE  # Olive's collator pads labels with it too

logger = logging.getLogger(f"olive.{__name__}")  # under Olive's logger: its lines go to the job log


def keeps_chosen_logits(model: Any) -> bool:
    """Whether ``model`` (a peft model or a plain one) projects only the positions a boolean
    ``logits_to_keep`` marks and computes its loss with ForCausalLMLoss, which accepts
    ``shift_labels``: true of the causal LMs transformers 5 ships, not of remote code."""
    import torch
    from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss
    from transformers.modeling_utils import slice_logits_to_keep

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    forward = inspect.unwrap(type(base).forward)
    if forward.__globals__.get("slice_logits_to_keep") is not slice_logits_to_keep:
        return False
    if LOSS_MAPPING.get(getattr(base, "loss_type", None)) is not ForCausalLMLoss:
        return False
    return slice_logits_to_keep(torch.zeros(1, 2, 1), torch.tensor([[False, True]])).shape == (1, 1)


def keep_learned_logits(batch: dict[str, Any]) -> dict[str, Any]:
    """Add ``logits_to_keep`` (the positions whose next token is learned) and ``shift_labels``
    (those next tokens, in the order the model flattens the kept positions) to a padded batch."""
    import torch

    labels = batch["labels"]
    targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE)
    keep = targets.ne(IGNORE)
    return {**batch, "logits_to_keep": keep, "shift_labels": targets[keep]}


@contextlib.contextmanager
def early_stopping(patience: int | None, threshold: float):
    """With ``patience``, add an EarlyStoppingCallback to every Trainer created inside the block."""
    if patience is None:
        yield
        return
    from transformers import EarlyStoppingCallback

    callback = EarlyStoppingCallback(early_stopping_patience=patience, early_stopping_threshold=threshold)
    logger.info("Early stopping: after %d evaluations without a lower eval_loss (by > %g)", patience, threshold)
    with on_every_trainer(callback):
        yield


class LearnedLogitsOnly:
    """Mixed into an Olive LoRA-family pass: its trainer's batches ask for the learned logits only."""

    learned_logits_only = False  # decided per training run, from the model

    @classmethod
    def _default_config(cls, accelerator_spec: Any) -> dict[str, PassConfigParam]:
        return {
            **super()._default_config(accelerator_spec),
            "early_stopping_patience": PassConfigParam(
                type_=int | None,
                default_value=None,
                description="Stop after this many evaluations in a row without a lower eval_loss (None: never).",
            ),
            "early_stopping_threshold": PassConfigParam(
                type_=float, default_value=0.0, description="Smallest drop of eval_loss that counts as one."
            ),
        }

    def train_and_save_new_model(self, model: Any, tokenizer: Any, config: Any, *args: Any, **kwargs: Any) -> Any:
        self.learned_logits_only = keeps_chosen_logits(model)
        if self.learned_logits_only:
            logger.info("Training computes logits only at the learned positions")
        else:
            logger.info("Training computes every logit: this model's forward cannot skip positions")
        with early_stopping(config.early_stopping_patience, config.early_stopping_threshold):
            return super().train_and_save_new_model(model, tokenizer, config, *args, **kwargs)

    def collate_batch(self, batch: list[dict], tokenizer: Any) -> dict[str, Any]:
        padded = super().collate_batch(batch, tokenizer)
        return keep_learned_logits(padded) if self.learned_logits_only else padded


class OliveFlowsLoRA(LearnedLogitsOnly, LoRA):
    """Olive's LoRA pass, learned logits only."""


class OliveFlowsQLoRA(LearnedLogitsOnly, QLoRA):
    """Olive's QLoRA pass, learned logits only."""


class OliveFlowsDoRA(LearnedLogitsOnly, DoRA):
    """Olive's DoRA pass, learned logits only."""
