"""Training throughput: an olive-flows LoRA run against plain peft + transformers Trainer scripts.

Same model, rows, LoRA settings, batch size, learning rate and steps. The plain scripts are what a
careful user would write: chat template, truncation to max_seq_len, dynamic padding to the longest
row of each batch. The baseline learns what olive-flows learns, the answer tokens (the prompt's
labels set to -100, the rows padded by DataCollatorForSeq2Seq); the every-token script, the
simplest one (DataCollatorForLanguageModeling), is measured beside it, and so is the baseline with
``bf16=True`` (transformers' bf16 mixed precision, which olive-flows' ``training.mixed_precision:
auto`` turns on where the CPU computes bf16 natively; the plain scripts train in fp32, Trainer's
default). The figure is non-padding tokens trained per second. olive-flows computes logits only at
the positions that predict a learned token; the plain scripts compute every logit.

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
    stats = json.loads(Path(job.stats_path).read_text(encoding="utf-8"))
    return seconds, recipe.adapters["contacts"], {"rows_file": str(data.train_file), **stats}


# The plain scripts: whether each learns the answer tokens only (else every token), and in bf16.
PLAIN = {"peft_answers": (True, False), "peft_every_token": (False, False), "peft_answers_bf16": (True, True)}


def plain_rows(tokenizer: Any, rows_file: str, max_seq_len: int, answers_only: bool) -> Any:
    """The rows as a plain script tokenizes them: the chat template, truncated to ``max_seq_len``; with
    ``answers_only``, labels that are -100 up to the assistant's answer (the last turn)."""
    from datasets import load_dataset

    def tokenized(row: dict[str, Any]) -> dict[str, list[int]]:
        text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
        ids = tokenizer(text, truncation=True, max_length=max_seq_len)
        if answers_only:
            prompt = tokenizer.apply_chat_template(row["messages"][:-1], tokenize=False, add_generation_prompt=True)
            assert text.startswith(prompt), "the answer is the last turn"
            masked = len(tokenizer(prompt)["input_ids"])
            ids["labels"] = [-100] * masked + ids["input_ids"][masked:]
        return ids

    data = load_dataset("json", data_files=rows_file, split="train")
    return data.map(tokenized, remove_columns=data.column_names)


def peft_seconds(
    model_path: str, rows_file: str, adapter: dict[str, Any], steps: int, work: Path, answers_only: bool, bf16: bool
) -> tuple[float, float]:
    """A plain script; returns the trainer's train_runtime and the mean non-padding tokens per row."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        DataCollatorForSeq2Seq,
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
    data = plain_rows(tokenizer, rows_file, training["max_seq_len"], answers_only)
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
        bf16=bf16,
        use_cpu=bf16 and not torch.cuda.is_available(),  # transformers' condition for bf16 without a GPU
    )
    collator = (
        DataCollatorForSeq2Seq(tokenizer, padding=True)
        if answers_only
        else DataCollatorForLanguageModeling(tokenizer, mlm=False)
    )
    started = time.perf_counter()
    output = Trainer(model=model, args=args, train_dataset=data, data_collator=collator).train()
    return output.metrics.get("train_runtime", time.perf_counter() - started), mean_tokens


def side_by_side(
    model_path: str, steps: int, repeats: int, work: Path, say: Callable[[str], None], bf16: bool
) -> dict[str, Any]:
    """``repeats`` timed runs of each, after a warm-up, in rotating order (each goes first in turn),
    so that none always pays for what another leaves behind. Without ``bf16`` (a CPU that does not
    compute bf16 natively, where olive-flows trains in fp32 too) the bf16 script is left out: it
    emulates every bf16 operation there, takes some 25 times as long as the fp32 one and says
    nothing about olive-flows."""
    say("training warm-up (not timed)")
    _, adapter, stats = olive_flows_seconds(2, work / "warm-up")
    sides = ("olive_flows", *(side for side, (_, in_bf16) in PLAIN.items() if bf16 or not in_bf16))
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    for repeat in range(repeats):
        for side in sides[repeat % len(sides) :] + sides[: repeat % len(sides)]:
            if side == "olive_flows":
                took, adapter, stats = olive_flows_seconds(steps, work / f"of-{repeat}")
            else:
                took, mean_tokens = peft_seconds(model_path, stats["rows_file"], adapter, steps, work, *PLAIN[side])
            seconds[side].append(took)
    return {"seconds": seconds, "adapter": adapter, "stats": stats, "peft_mean_tokens": mean_tokens}
