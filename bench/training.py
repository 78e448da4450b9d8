"""Training throughput: an olive-flows LoRA run against a plain peft + transformers Trainer script.

Same model, rows, LoRA settings, batch size, learning rate and steps. The plain script is what a
user would write: chat template, truncation to max_seq_len, dynamic padding to the longest row of
each batch, loss on every token. The figure is non-padding tokens trained per second. olive-flows
learns the answers only and computes logits only at the positions that predict them; the plain
script computes every logit (masking the prompt's labels, as a script learning only the answers
would, leaves its cost the same).

The first training in a process runs slower than the ones after it, so
``side_by_side`` runs an untimed warm-up first and alternates which of the two goes first.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from train_padding import contacts_training, train_seconds


def olive_flows_seconds(steps: int, work: Path) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """The quickstart contacts adapter trained by olive-flows (Olive's LoRA pass), training only."""
    recipe, data, job, config = contacts_training(steps, work)
    seconds = train_seconds(config, Path(tempfile.mkdtemp(dir=work)), "olive-flows")
    stats = json.loads(Path(job.stats_path).read_text())
    return seconds, recipe.adapters["contacts"], {"rows_file": str(data.train_file), **stats}


def peft_seconds(model_path: str, rows_file: str, adapter: dict[str, Any], steps: int, work: Path) -> tuple[float, int]:
    """The plain script; returns the trainer's train_runtime and the mean non-padding tokens per row."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    training = adapter["training"]
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(
            r=adapter["r"],
            lora_alpha=adapter["alpha"],
            lora_dropout=adapter["dropout"],
            target_modules=adapter["target_modules"] or ["q_proj", "k_proj", "v_proj", "o_proj"],
            task_type="CAUSAL_LM",
        ),
    )
    data = load_dataset("json", data_files=rows_file, split="train")
    data = data.map(
        lambda row: tokenizer(
            tokenizer.apply_chat_template(row["messages"], tokenize=False),
            truncation=True,
            max_length=training["max_seq_len"],
        ),
        remove_columns=data.column_names,
    )
    mean_tokens = sum(len(ids) for ids in data["input_ids"]) / len(data)
    args = TrainingArguments(
        output_dir=str(work / "peft"),
        max_steps=steps,
        per_device_train_batch_size=training["batch_size"],
        learning_rate=training["learning_rate"],
        lr_scheduler_type=training["lr_scheduler"],
        warmup_steps=math.ceil(training["warmup_ratio"] * steps),
        seed=training["seed"],
        logging_steps=steps,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    started = time.perf_counter()
    output = Trainer(model=model, args=args, train_dataset=data, data_collator=collator).train()
    return output.metrics.get("train_runtime", time.perf_counter() - started), mean_tokens


def side_by_side(model_path: str, steps: int, repeats: int, work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """``repeats`` timed runs of each, after a warm-up, in alternating order (olive-flows first, then
    the plain script first, ...), so that neither always pays for what the other leaves behind."""
    say("training warm-up (not timed)")
    _, adapter, stats = olive_flows_seconds(2, work / "warm-up")
    ours: list[float] = []
    plain: list[float] = []
    for repeat in range(repeats):
        order = ("olive-flows", "peft") if repeat % 2 == 0 else ("peft", "olive-flows")
        for who in order:
            if who == "olive-flows":
                seconds, adapter, stats = olive_flows_seconds(steps, work / f"of-{repeat}")
                ours.append(seconds)
            else:
                seconds, mean_tokens = peft_seconds(model_path, stats["rows_file"], adapter, steps, work)
                plain.append(seconds)
    return {"olive_flows_s": ours, "peft_s": plain, "adapter": adapter, "stats": stats, "peft_mean_tokens": mean_tokens}
