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


def token_nll(logits: np.ndarray, example: Encoded) -> NLL:
    """NLL of the labelled tokens of ``example`` given logits for every position ([seq, vocab])."""
    labels = np.array(example.labels[1:])
    scored = labels != IGNORE
    if not scored.any():
        return NLL()
    logits = logits[:-1][scored].astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(logits - top).sum(axis=-1)) + top[:, 0]
    picked = logits[np.arange(len(logits)), labels[scored]]
    return NLL(float((log_norm - picked).sum()), int(scored.sum()))


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

    def logits(self, example: Encoded, adapter: str | None) -> np.ndarray:
        """Logits for every position of ``example`` ([seq, vocab]), with ``adapter`` active or none."""
        return self.batch_logits([example], adapter)[0]

    def batch_logits(self, batch: list[Encoded], adapter: str | None) -> list[np.ndarray]:
        """Logits of several examples in one right-padded forward pass; forward passes one row at a
        time dominated evaluation time on CPU."""
        torch = self._torch
        longest = max(len(e.input_ids) for e in batch)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([e.input_ids + [pad] * (longest - len(e.input_ids)) for e in batch])
        mask = torch.tensor([[1] * len(e.input_ids) + [0] * (longest - len(e.input_ids)) for e in batch])
        with torch.no_grad():
            if adapter is None and hasattr(self.model, "disable_adapter"):
                with self.model.disable_adapter():
                    out = self.model(input_ids=ids, attention_mask=mask)
            else:
                if adapter is not None:
                    self.model.set_adapter(adapter)
                out = self.model(input_ids=ids, attention_mask=mask)
        logits = out.logits.float().numpy()
        return [logits[i, : len(e.input_ids)] for i, e in enumerate(batch)]


def onnx_logits(runtime: Any, example: Encoded, adapter: str | None) -> np.ndarray:
    """Logits for every position of ``example`` from the exported package (onnxruntime-genai)."""
    generator = runtime.generator(len(example.input_ids) + 1, adapter)
    generator.append_tokens(example.input_ids)
    return np.asarray(generator.get_output("logits"))[0]


def examples(tokenizer: Any, rows: list[dict[str, Any]], max_seq_len: int, loss_on: str) -> list[Encoded]:
    """The rows tokenized as they were for training."""
    return [encode(tokenizer, row, max_seq_len, loss_on) for row in rows]
