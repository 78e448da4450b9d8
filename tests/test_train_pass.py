"""olive-flows' LoRA passes compute logits only where the loss is taken and pack each batch's rows into
one sequence, with the same loss and gradients as the whole, padded batch."""

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
from olive_flows.models.packed_attention import PACKED_SDPA, attending_per_row, packed_sdpa, row_bounds
from olive_flows.plugins import package_config
from olive_flows.plugins.train_pass import (
    bf16_natively,
    keep_learned_logits,
    keeps_chosen_logits,
    keeps_packed_rows_apart,
    pack_rows,
    trains_in_bf16,
)
from olive_flows.run.olive import run_workflow

ATTENTION = {"llama": "sdpa", "phi3": "sdpa", "qwen2": "sdpa", "gemma2": "eager"}  # what transformers loads


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
    return LoRA.collate_batch(olive_rows(folder, rows), AutoTokenizer.from_pretrained(folder))


def olive_rows(folder, rows: int = 3, loss_on: str = "assistant") -> list[dict[str, torch.Tensor]]:
    """Quickstart rows of different lengths, tokenized as olive-flows' data component hands them to Olive."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    lines = (QUICKSTART_DATA / "contacts.jsonl").read_text(encoding="utf-8").splitlines()[:rows]
    examples = [encode(tokenizer, json.loads(line), 96, loss_on) for line in lines]
    return [
        {
            "input_ids": torch.tensor(e.input_ids),
            "attention_mask": torch.ones(len(e.input_ids), dtype=torch.long),
            "labels": torch.tensor(e.labels),
        }
        for e in examples
    ]


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
    trains with the learned logits only and, asked to, packed rows, attending per row on the sdpa model
    Olive loads (its log lines say so)."""
    train = {**tiny_job.config["passes"]["train"], "packing": True, "mixed_precision": "bf16"}
    config = {**tiny_job.config, "passes": {"train": train}}
    assert config["passes"]["train"]["type"] == "OliveFlowsLoRA"
    assert (
        package_config()["passes"]["OliveFlowsLoRA"]["module_path"] == "olive_flows.plugins.train_pass.OliveFlowsLoRA"
    )

    with caplog.at_level(logging.INFO, logger="olive"):
        run_workflow(tiny_job.name, config, tmp_path / "job.log")
    assert "Training computes logits only at the learned positions" in caplog.text
    assert (
        "Training packs each batch's rows into one sequence: no padding is computed (attention per row)" in caplog.text
    )
    # transformers refuses bf16 on a machine without a GPU unless the pass also says use_cpu
    assert "Training in bf16 mixed precision (training.mixed_precision: bf16)" in caplog.text


def test_mixed_precision_auto_is_bf16_where_the_device_computes_it_natively():
    yes, no = (lambda: True), (lambda: False)
    assert trains_in_bf16("bf16", "float32", no) and not trains_in_bf16("fp32", "float32", yes)
    assert trains_in_bf16("auto", "float32", yes) and trains_in_bf16("auto", "bfloat16", yes)
    assert not trains_in_bf16("auto", "float32", no)
    assert not trains_in_bf16("auto", "float16", yes), "a float16 model trains in Olive's fp16 mixed precision"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU decides by itself")
def test_a_cpu_computes_bf16_natively_with_avx512_bf16_or_amx():
    assert bf16_natively({"avx2", "avx512f", "avx512_bf16"}) and bf16_natively({"amx_bf16", "amx_tile"})
    assert not bf16_natively({"avx2", "avx512f", "avx512bw"}) and not bf16_natively(set())


@pytest.mark.parametrize(
    ("model_type", "loss_on"),
    [("llama", "assistant"), ("phi3", "all"), ("qwen2", "assistant"), ("gemma2", "assistant")],
)
@pytest.mark.parametrize("per_row", [False, True], ids=["transformers-attention", "per-row-attention"])
def test_packed_rows_give_the_padded_loss_and_gradients(tiny_model, model_type, loss_on, per_row):
    """A batch's rows packed into one sequence (no padding, position ids restarting at each row) give
    the loss and gradients of the padded batch, with every logit and with the learned ones only: with
    transformers' own attention (a causal block per row in its mask) and with the per-row attention
    the training pass runs on an sdpa model (gemma2's softcapped eager attention keeps its own)."""
    folder = tiny_model(model_type)
    model = lora_model(folder)
    rows = olive_rows(folder, loss_on=loss_on)
    assert len({len(row["input_ids"]) for row in rows}) > 1, "rows of different lengths: the padded batch pads"
    padded = LoRA.collate_batch(rows, AutoTokenizer.from_pretrained(folder))
    packed = pack_rows(rows)
    tokens = sum(len(row["input_ids"]) for row in rows)
    assert packed["input_ids"].shape == (1, tokens) and tokens < padded["input_ids"].numel()
    assert "attention_mask" not in packed

    with attending_per_row(model, per_row) as switched:
        assert switched == (per_row and model_type != "gemma2")
        assert model.get_base_model().config._attn_implementation == (
            PACKED_SDPA if switched else ATTENTION[model_type]
        )
        assert keeps_packed_rows_apart(model)
        for make in (dict, keep_learned_logits):
            whole, whole_grads = loss_and_gradients(model, make(padded))
            together, together_grads = loss_and_gradients(model, make(packed))
            torch.testing.assert_close(together.loss, whole.loss, rtol=1e-5, atol=1e-6)
            assert whole_grads.keys() == together_grads.keys() and whole_grads
            for name, grad in whole_grads.items():
                torch.testing.assert_close(together_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert model.get_base_model().config._attn_implementation == ATTENTION[model_type], "its own attention is back"


def test_per_row_attention_keeps_packed_rows_apart_without_a_mask():
    """Given no mask, the per-row attention gives each packed row what the row alone gives, where one
    causal attention over the whole sequence lets the second row read the first."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention

    module = LlamaAttention(LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2), layer_idx=0)
    torch.manual_seed(0)
    query, key, value = torch.randn(1, 4, 7, 16), torch.randn(1, 2, 7, 16), torch.randn(1, 2, 7, 16)
    positions = torch.tensor([[0, 1, 2, 0, 1, 2, 3]])
    together, _ = packed_sdpa(module, query, key, value, None, scaling=0.25, position_ids=positions)
    alone = [
        packed_sdpa(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, scaling=0.25)[0]
        for a, b in ((0, 3), (3, 7))
    ]
    torch.testing.assert_close(together, torch.cat(alone, dim=1))
    mixed, _ = packed_sdpa(module, query, key, value, None, scaling=0.25)
    assert not torch.allclose(mixed[:, 3:], together[:, 3:]), "without the position ids the rows mix"


def test_per_row_attention_reads_packed_rows_only():
    """The per-row path takes one sequence whose positions restart; anything else (a padded batch, one
    row, positions that do not start at 0) goes to transformers' sdpa with its mask."""
    assert row_bounds(torch.tensor([[0, 1, 2, 0, 1, 0]]), 6) == [0, 3, 5, 6]
    assert row_bounds(torch.tensor([[0, 1, 2, 3]]), 4) is None
    assert row_bounds(torch.tensor([[0, 1, 0, 1], [0, 1, 0, 1]]), 4) is None
    assert row_bounds(torch.tensor([[3, 4, 0, 1]]), 4) is None
    assert row_bounds(None, 4) is None


def test_a_model_whose_attention_mixes_packed_rows_trains_padded(tiny_model):
    """RemoteCodeLlama ignores the position ids: packed rows would attend to each other, and the check
    before training says so."""
    assert not keeps_packed_rows_apart(RemoteCodeLlama.from_pretrained(tiny_model("llama")))
