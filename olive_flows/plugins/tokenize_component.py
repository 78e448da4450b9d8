"""olive-flows' tokenization as an Olive data component, so Olive's own LoRA pass trains on it.

Olive's built-in text-generation pre-processing computes the loss on every token (prompt included)
and pads every row to max_seq_len. This component is registered in Olive's data registry under
``olive_flows_tokenize`` and named in each compiled data config (with this file as the config's
``user_script``, so ``olive run`` on a compiled config finds it too). Olive fills in ``model_name``
and ``trust_remote_code`` from the input model. Olive's collator then pads each batch only to its
longest row and pads labels with -100.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from olive.data.registry import Registry

from olive_flows.data.tokenize import encode, percentiles
from olive_flows.plugins import TOKENIZE_COMPONENT


@Registry.register_pre_process(TOKENIZE_COMPONENT)
def olive_flows_tokenize(
    dataset: Any,
    model_name: str,
    max_seq_len: int,
    loss_on: str = "assistant",
    min_tokens: int | None = None,
    max_tokens: int | None = None,
    stats_path: str | None = None,
    trust_remote_code: bool | None = None,
    **_: Any,
):
    """Tokenize normalized rows into input_ids, attention_mask and labels; write what happened to ``stats_path``."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_name, trust_remote_code=bool(trust_remote_code))
    columns: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
    lengths, truncated, no_answer, out_of_range = [], [], [], []
    learned = 0
    for index, row in enumerate(dataset):
        example = encode(tokenizer, row, max_seq_len, loss_on)
        lengths.append(example.full_length)
        if (min_tokens and example.full_length < min_tokens) or (max_tokens and example.full_length > max_tokens):
            out_of_range.append(index)
            continue
        if example.learned == 0:
            no_answer.append(index)
            continue
        if example.truncated:
            truncated.append(index)
        learned += example.learned
        columns["input_ids"].append(example.input_ids)
        columns["attention_mask"].append([1] * len(example.input_ids))
        columns["labels"].append(example.labels)
    if stats_path:
        stats = {
            "rows": len(lengths),
            "examples": len(columns["input_ids"]),
            "tokens": sum(len(ids) for ids in columns["input_ids"]),
            "learned_tokens": learned,
            "length_percentiles": percentiles(lengths),
            "max_seq_len": max_seq_len,
            "loss_on": loss_on,
            "truncated_rows": truncated,
            "dropped_no_learned_token": no_answer,
            "dropped_by_length_filter": out_of_range,
        }
        Path(stats_path).parent.mkdir(parents=True, exist_ok=True)
        Path(stats_path).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    if not columns["input_ids"]:
        raise ValueError(f"no training example left after tokenization (max_seq_len {max_seq_len}); see {stats_path}")
    return Dataset.from_dict(columns)
