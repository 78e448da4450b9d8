"""Perplexity of held-out rows, on the PyTorch model with its PEFT adapter and on the exported package.

Both sides tokenize a row with the same code as training (data/tokenize.py) and score the same
tokens: the assistant's answers for chat rows, everything for text rows. Perplexity is
exp(total negative log-likelihood / number of scored tokens).
"""

from __future__ import annotations

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


def token_nll(logits: np.ndarray, example: Encoded) -> NLL:
    """NLL of the labelled tokens of ``example`` given the logits at its scored positions
    ([scored, vocab], in ``scored_positions`` order)."""
    if not len(logits):
        return NLL()
    labels = np.array(example.labels)[scored_positions(example) + 1]
    logits = logits.astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(logits - top).sum(axis=-1)) + top[:, 0]
    picked = logits[np.arange(len(logits)), labels]
    return NLL(float((log_norm - picked).sum()), len(labels))


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


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))


def agreement(reference: np.ndarray, package: np.ndarray) -> Agreement:
    """The Agreement of ``package``'s logits with ``reference``'s (PyTorch), both at the same scored
    positions ([scored, vocab])."""
    if not len(reference):
        return Agreement()
    log_p = _log_softmax(reference)
    log_q = _log_softmax(package)
    p = np.exp(log_p)
    confident = p.max(axis=-1) >= CONFIDENT
    same = log_p.argmax(axis=-1) == log_q.argmax(axis=-1)
    return Agreement(
        float((p * (log_p - log_q)).sum()), len(reference), int(confident.sum()), int((same & confident).sum())
    )


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
        projects only those positions onto the vocabulary."""
        torch = self._torch
        longest = max(len(e.input_ids) for e in batch)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([e.input_ids + [pad] * (longest - len(e.input_ids)) for e in batch])
        mask = torch.tensor([[1] * len(e.input_ids) + [0] * (longest - len(e.input_ids)) for e in batch])
        keep = torch.zeros(len(batch), longest, dtype=torch.bool)
        for row, example in enumerate(batch):
            keep[row, torch.from_numpy(scored_positions(example))] = True
        inputs = {"input_ids": ids, "attention_mask": mask}
        if self.slices:
            inputs["logits_to_keep"] = keep
        with torch.no_grad():
            if adapter is None and hasattr(self.model, "disable_adapter"):
                with self.model.disable_adapter():
                    out = self.model(**inputs)
            else:
                if adapter is not None:
                    self.model.set_adapter(adapter)
                out = self.model(**inputs)
        logits = out.logits.float() if self.slices else out.logits.float()[keep]  # [scored in the batch, vocab]
        return [part.numpy() for part in torch.split(logits, keep.sum(dim=1).tolist())]


def onnx_logits(runtime: Any, example: Encoded, adapter: str | None) -> np.ndarray:
    """Logits at ``example``'s scored positions from the exported package (onnxruntime-genai). One
    row at a time: a row's prefill already fills the CPU, and batches of equal-length rows were no
    faster on the quickstart."""
    generator = runtime.generator(len(example.input_ids) + 1, adapter)
    generator.append_tokens(example.input_ids)
    return np.asarray(generator.get_output("logits"))[0, scored_positions(example)]


def examples(tokenizer: Any, rows: list[dict[str, Any]], max_seq_len: int, loss_on: str) -> list[Encoded]:
    """The rows tokenized as they were for training."""
    return [encode(tokenizer, row, max_seq_len, loss_on) for row in rows]
