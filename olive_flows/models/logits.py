"""Projecting only the positions that matter onto the vocabulary.

A small model's LM head is a large share of its compute (49152 x 576 on SmolLM2-135M, a fifth of
its weights), and both training and scoring need its logits only where a label is: the answer's
tokens, not the prompt's or the padding's. transformers 5's causal LMs take a boolean
``logits_to_keep`` of shape (batch, sequence) and project just the marked positions, flattened."""

from __future__ import annotations

import inspect
from typing import Any


def slices_chosen_logits(model: Any) -> bool:
    """Whether ``model`` (a peft model or a plain one) projects only the positions a boolean
    ``logits_to_keep`` marks: true of the causal LMs transformers 5 ships, not of remote code."""
    import torch
    from transformers.modeling_utils import slice_logits_to_keep

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    forward = inspect.unwrap(type(base).forward)
    if forward.__globals__.get("slice_logits_to_keep") is not slice_logits_to_keep:
        return False
    return slice_logits_to_keep(torch.zeros(1, 2, 1), torch.tensor([[False, True]])).shape == (1, 1)
