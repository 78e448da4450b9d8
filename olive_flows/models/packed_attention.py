"""Attention over packed rows, one row at a time.

A packed batch (plugins/train_pass.py: pack_rows) is one sequence whose position ids restart at each
row. transformers' sdpa reads the rows from the position ids and builds one causal block per row in
a mask over the whole sequence, so its attention grows with the square of the packed length and
takes the masked kernel: on a CPU, packing then trained slower than padding. flash-attention's
variable-length kernel, which keeps packing cheap on a GPU, is not there on a CPU. This attention
runs torch's scaled_dot_product_attention causally on each row's own queries, keys and values,
which is the same sum over the same positions without the blocks no row may read.

Registered as ``PACKED_SDPA`` in transformers' AttentionInterface (with sdpa's mask function): any
input it does not recognise as packed rows, and any layer with a sliding window or a softcap, goes to
transformers' own sdpa with the mask transformers built for it.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

PACKED_SDPA = "olive_flows_packed_sdpa"


def row_bounds(position_ids: Any, length: int) -> list[int] | None:
    """Where each packed row starts, and the sequence's end: None unless ``position_ids`` is one
    sequence that starts a row at its first position and restarts at least once."""
    if position_ids is None or position_ids.shape[0] != 1 or position_ids.shape[-1] != length:
        return None
    starts = (position_ids[0] == 0).nonzero().flatten().tolist()
    if len(starts) < 2 or starts[0] != 0:
        return None
    return [*starts, length]


def packed_sdpa(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_ids: Any = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' attention-function signature: (batch, heads, sequence, head_dim) in, (batch,
    sequence, heads, head_dim) out."""
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    bounds = row_bounds(position_ids, query.shape[2]) if key.shape[2] == query.shape[2] else None
    plain = getattr(module, "sliding_window", None) is None and kwargs.get("softcap") is None
    if bounds is None or not plain or not getattr(module, "is_causal", True):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    rows = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], dropout_p=dropout, is_causal=True, scale=scaling
        )
        for a, b in itertools.pairwise(bounds)
    ]
    return torch.cat(rows, dim=2).transpose(1, 2).contiguous(), None


def register() -> str:
    """Make ``PACKED_SDPA`` a name transformers' models accept as their attention implementation."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_SDPA, packed_sdpa)
    AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)
    return PACKED_SDPA


@contextlib.contextmanager
def attending_per_row(model: Any, packing: bool) -> Iterator[bool]:
    """While packing, a ``model`` (a peft model or a plain one) on transformers' sdpa runs
    ``PACKED_SDPA`` instead; yields whether it does. Its own attention is back afterwards."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if not packing or getattr(config, "_attn_implementation", None) != "sdpa":
        yield False
        return
    base.set_attn_implementation(register())
    try:
        yield True
    finally:
        base.set_attn_implementation("sdpa")
