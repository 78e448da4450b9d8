"""Perplexity of held-out rows, on the PyTorch model with its PEFT adapter and on the exported package.

Both sides tokenize a row with the same code as training (data/tokenize.py) and score the same
tokens: the assistant's answers for chat rows, everything for text rows. Perplexity is
exp(total negative log-likelihood / number of scored tokens).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from olive_flows.data.tokenize import IGNORE, Encoded, encode
from olive_flows.models.logits import slices_chosen_logits


@dataclass
class NLL:
    """Summed negative log-likelihood and the number of tokens it covers."""

    total: float = 0.0
    tokens: int = 0

    def add(self, other: NLL) -> NLL:
        return NLL(self.total + other.total, self.tokens + other.tokens)

    @property
    def perplexity(self) -> float | None:
        return math.exp(self.total / self.tokens) if self.tokens else None


def scored_positions(example: Encoded) -> np.ndarray:
    """Positions whose logits predict a scored token (the next token's label is not IGNORE): the
    only logits perplexity and parity read."""
    return np.flatnonzero(np.array(example.labels[1:]) != IGNORE)


def shared_prefix(rows: list[list[int]]) -> int:
    """How many leading tokens all ``rows`` have in common."""
    shortest = min(map(len, rows))
    return next((i for i in range(shortest) if len({row[i] for row in rows}) > 1), shortest)


def first_read(example: Encoded) -> int:
    """The first position whose logits scoring reads (the last one when no token is scored): a
    prefix computed once for several rows must end before it."""
    positions = scored_positions(example)
    return int(positions[0]) if len(positions) else len(example.input_ids) - 1


def token_nll(logits: np.ndarray, example: Encoded) -> NLL:
    """NLL of the labelled tokens of ``example`` given the logits at its scored positions
    ([scored, vocab], in ``scored_positions`` order)."""
    return _nll(_log_softmax(logits), example) if len(logits) else NLL()


def _nll(log_probs: Any, example: Encoded) -> NLL:
    """NLL of the labelled tokens of ``example`` given the log-probabilities at its scored positions."""
    labels = np.array(example.labels)[scored_positions(example) + 1]
    return NLL(-float(log_probs[np.arange(len(labels)), labels].sum()), len(labels))


CONFIDENT = 0.5  # top-1 agreement counts the positions where PyTorch gives its top token at least this


@dataclass
class Agreement:
    """How the package's next-token distributions match PyTorch's over scored tokens: the summed
    KL divergence KL(PyTorch || package) in nats, and at the positions where PyTorch is confident
    (its top token has probability >= CONFIDENT) how often the package's top token is the same.
    Both scale with the model: a healthy export moves a confident answer little, a broken adapter
    moves it a lot, whatever the perplexity."""

    kl_total: float = 0.0
    tokens: int = 0
    confident: int = 0
    agreed: int = 0

    def add(self, other: Agreement) -> Agreement:
        return Agreement(
            self.kl_total + other.kl_total,
            self.tokens + other.tokens,
            self.confident + other.confident,
            self.agreed + other.agreed,
        )

    @property
    def kl(self) -> float | None:
        """Mean KL divergence per scored token, in nats."""
        return self.kl_total / self.tokens if self.tokens else None

    @property
    def top1(self) -> float | None:
        """Share of confident positions where the package's top token is PyTorch's (None: none were confident)."""
        return self.agreed / self.confident if self.confident else None


def _log_softmax(logits: np.ndarray) -> Any:
    """Log-probabilities in float64 (a torch tensor: on 2 cores twice as fast as numpy's)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(logits)).double().log_softmax(dim=-1)


def _agreement(log_p: Any, log_q: Any) -> Agreement:
    """The Agreement of the package's log-probabilities ``log_q`` with PyTorch's ``log_p``, both at
    the same scored positions ([scored, vocab])."""
    import torch

    top, top_token = log_p.max(dim=-1)
    confident = top.exp() >= CONFIDENT
    same = top_token == log_q.argmax(dim=-1)
    kl = torch.nn.functional.kl_div(log_q, log_p, reduction="sum", log_target=True)  # one pass, no temporaries
    return Agreement(float(kl), len(log_p), int(confident.sum()), int((same & confident).sum()))


def nll_and_agreement(reference: np.ndarray, package: np.ndarray, example: Encoded) -> tuple[NLL, NLL, Agreement]:
    """``token_nll`` of the package's and the reference's logits and their Agreement, each side's
    log-softmax over the vocabulary computed once for all three (most of their time)."""
    if not len(reference):
        return NLL(), NLL(), Agreement()
    log_p, log_q = _log_softmax(reference), _log_softmax(package)
    return _nll(log_q, example), _nll(log_p, example), _agreement(log_p, log_q)


class PyTorchScorer:
    """The base model in fp32 with every PEFT adapter loaded; scores rows with or without one."""

    def __init__(self, model_path: str, adapters: dict[str, Path], trust_remote_code: bool = False):
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=torch.float32, trust_remote_code=trust_remote_code
        )
        self.model = None
        for name, path in adapters.items():
            if self.model is None:
                self.model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
            else:
                self.model.load_adapter(str(path), adapter_name=name)
        self.model = (self.model or model).eval()
        self.slices = slices_chosen_logits(self.model)

    def batch_logits(self, batch: list[Encoded], adapter: str | None) -> list[np.ndarray]:
        """Logits at each example's scored positions, from one right-padded forward pass: forward
        passes one row at a time dominated evaluation time on CPU. A model that can (models/logits.py)
        projects only those positions onto the vocabulary, and runs the tokens every row of the batch
        starts with (its chat template's system prompt, say) once: a forward pass of that prefix
        alone, its KV cache repeated for each row. Rows in token order share the most; on the
        quickstart this took a quarter off the PyTorch side, within 1e-4 of the logits without it."""
        torch = self._torch
        context = self.model.disable_adapter() if adapter is None and hasattr(self.model, "disable_adapter") else None
        if adapter is not None:
            self.model.set_adapter(adapter)
        with torch.no_grad(), context or contextlib.nullcontext():
            return self._batch_logits(batch)

    def _batch_logits(self, batch: list[Encoded]) -> list[np.ndarray]:
        torch = self._torch
        shared = 0
        if self.slices:
            shared = min(shared_prefix([e.input_ids for e in batch]), *map(first_read, batch))
        inputs: dict[str, Any] = {}
        if shared:
            prefix = torch.tensor([batch[0].input_ids[:shared]])
            cache = self.model(
                input_ids=prefix, logits_to_keep=torch.zeros_like(prefix, dtype=torch.bool)
            ).past_key_values
            cache.batch_repeat_interleave(len(batch))
            inputs["past_key_values"] = cache
        longest = max(len(e.input_ids) for e in batch)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        inputs["input_ids"] = torch.tensor([e.input_ids[shared:] + [pad] * (longest - len(e.input_ids)) for e in batch])
        inputs["attention_mask"] = torch.tensor(
            [[1] * len(e.input_ids) + [0] * (longest - len(e.input_ids)) for e in batch]
        )
        keep = torch.zeros(len(batch), longest - shared, dtype=torch.bool)
        for row, example in enumerate(batch):
            keep[row, torch.from_numpy(scored_positions(example) - shared)] = True
        if self.slices:
            inputs["logits_to_keep"] = keep
        logits = self.model(**inputs).logits.float()
        if not self.slices:
            logits = logits[keep]  # [scored in the batch, vocab]
        return [part.numpy() for part in torch.split(logits, keep.sum(dim=1).tolist())]


class PackageScorer:
    """Logits at rows' scored positions from the exported package (onnxruntime-genai), with or without
    one adapter, through one generator.

    Each row rewinds the generator's KV cache to the tokens it shares with the row before and
    prefills only the rest: rows given in token order share their chat template's system prompt and
    often their instruction, 40 to 50% of the quickstart's tokens. The logits are bit for bit those of
    a fresh generator per row. A row's prefill alone already fills the CPU; batches of equal-length
    rows were no faster on the quickstart."""

    def __init__(self, runtime: Any, adapter: str | None, capacity: int):
        """``capacity``: the longest row's length plus one."""
        self._generator = runtime.generator(capacity, adapter)
        self._tokens: list[int] = []

    def logits(self, example: Encoded) -> np.ndarray:
        """[scored positions, vocabulary]: the logits at ``example``'s scored positions."""
        positions = scored_positions(example)
        ids = example.input_ids
        keep = min(shared_prefix([self._tokens, ids]), first_read(example))
        self._generator.rewind_to(keep)
        self._generator.append_tokens(ids[keep:])
        self._tokens = ids
        return np.asarray(self._generator.get_output("logits"))[0, positions - keep]


def examples(tokenizer: Any, rows: list[dict[str, Any]], max_seq_len: int, loss_on: str) -> list[Encoded]:
    """The rows tokenized as they were for training."""
    return [encode(tokenizer, row, max_seq_len, loss_on) for row in rows]
