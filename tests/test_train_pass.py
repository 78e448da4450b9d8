"""olive-flows' LoRA passes compute logits only where the loss is taken, with the same loss and gradients."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import torch
from conftest import QUICKSTART_DATA
from olive.passes.pytorch.lora import LoRA
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from olive_flows.data.tokenize import encode
from olive_flows.plugins import package_config
from olive_flows.plugins.train_pass import keep_learned_logits, keeps_chosen_logits
from olive_flows.run.olive import run_workflow


def lora_model(folder) -> torch.nn.Module:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    for name, weight in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero, which would leave A without a gradient
            torch.nn.init.normal_(weight, std=0.02)
    return model


def olive_batch(folder, rows: int = 3) -> dict[str, torch.Tensor]:
    """A batch of quickstart rows, answer tokens learned, as Olive's LoRA collator pads it."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    lines = (QUICKSTART_DATA / "contacts.jsonl").read_text().splitlines()[:rows]
    examples = [encode(tokenizer, json.loads(line), 96) for line in lines]
    samples = [
        {
            "input_ids": torch.tensor(e.input_ids),
            "attention_mask": torch.ones(len(e.input_ids), dtype=torch.long),
            "labels": torch.tensor(e.labels),
        }
        for e in examples
    ]
    return LoRA.collate_batch(samples, tokenizer)


def loss_and_gradients(model, batch) -> tuple[Any, dict[str, torch.Tensor]]:
    model.zero_grad()
    output = model(**batch)
    output.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return output, grads


@pytest.mark.parametrize("model_type", ["llama", "phi3", "qwen2"])
def test_learned_logits_only_give_the_whole_sequence_loss_and_gradients(tiny_model, model_type):
    folder = tiny_model(model_type)
    model = lora_model(folder)
    assert keeps_chosen_logits(model)
    batch = olive_batch(folder)
    learned = int(batch["labels"][:, 1:].ne(-100).sum())
    assert 0 < learned < batch["labels"].numel() // 2, "the rows must have unlearned positions to skip"

    whole, whole_grads = loss_and_gradients(model, batch)
    kept, kept_grads = loss_and_gradients(model, keep_learned_logits(batch))

    assert whole.logits.shape[:2] == batch["input_ids"].shape
    assert kept.logits.shape[0] == learned, "one row of logits per learned token, no more"
    torch.testing.assert_close(kept.loss, whole.loss)
    assert whole_grads.keys() == kept_grads.keys() and whole_grads
    for name, grad in whole_grads.items():
        torch.testing.assert_close(kept_grads[name], grad, msg=name)


class RemoteCodeLlama(LlamaForCausalLM):
    """Stands for remote code: a forward that computes every logit itself."""

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.lm_head(hidden)
        loss = None if labels is None else self.loss_function(logits, labels, self.config.vocab_size)
        return {"loss": loss, "logits": logits}


def test_a_forward_that_does_not_slice_its_logits_gets_olives_batches(tiny_model):
    assert not keeps_chosen_logits(RemoteCodeLlama.from_pretrained(tiny_model("llama")))


def test_the_compiled_training_pass_keeps_the_learned_logits_when_olive_runs_it(tiny_job, tmp_path, caplog):
    """The compiled config names olive-flows' pass, Olive loads it from the package config, and it
    trains with the learned logits only (its log line says so)."""
    config = {**tiny_job.config, "passes": {"train": tiny_job.config["passes"]["train"]}}
    assert config["passes"]["train"]["type"] == "OliveFlowsLoRA"
    assert (
        package_config()["passes"]["OliveFlowsLoRA"]["module_path"] == "olive_flows.plugins.train_pass.OliveFlowsLoRA"
    )

    with caplog.at_level(logging.INFO, logger="olive"):
        run_workflow(tiny_job.name, config, tmp_path / "job.log")
    assert "Training computes logits only at the learned positions" in caplog.text
