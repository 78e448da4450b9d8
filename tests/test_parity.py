"""Parity that would catch a broken adapter: the package's next-token distributions against the PyTorch
model's (KL per token, top-1 agreement where PyTorch is confident), enforced by default."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY_CONFIGS

from olive_flows.data.tokenize import IGNORE, Encoded
from olive_flows.evaluate.perplexity import (
    Agreement,
    PackageScorer,
    PyTorchScorer,
    nll_and_agreement,
    scored_positions,
    shared_prefix,
)
from olive_flows.evaluate.runtime import PackageRuntime


def encoded(labels: list[int]) -> Encoded:
    return Encoded(input_ids=list(range(len(labels))), labels=labels, full_length=len(labels))


def test_agreement_is_zero_for_equal_logits_and_counts_only_scored_confident_positions():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 7))
    logits[1, 3] = logits[2, 4] = 20.0  # PyTorch is confident at positions 1 and 2 (predicting tokens 2 and 3)
    example = encoded([IGNORE, IGNORE, 3, 4, IGNORE])
    positions = scored_positions(example)
    assert positions.tolist() == [1, 2], "the logits at positions 1 and 2 predict the labelled tokens"
    same = nll_and_agreement(logits[positions], logits[positions], example)[2]
    assert same.kl == pytest.approx(0.0, abs=1e-12) and (same.tokens, same.confident, same.agreed) == (2, 2, 2)
    moved = logits.copy()
    moved[1, 5] = 40.0  # the package prefers another token at position 1
    found = nll_and_agreement(logits[positions], moved[positions], example)[2]
    assert found.top1 == 0.5 and found.kl > 5, "one of two confident positions now disagrees, by a lot"
    assert Agreement().kl is None and Agreement().top1 is None, "nothing scored: nothing to bound"


def test_pytorch_scores_only_the_scored_positions_with_the_logits_of_the_whole_sequence(tiny_model):
    """PyTorchScorer projects just the scored positions onto the vocabulary (logits_to_keep): the
    logits equal those of the whole padded sequence at the same positions."""
    scorer = PyTorchScorer(str(tiny_model("llama")), {})
    batch = [encoded([IGNORE, IGNORE, 3, 4, IGNORE, 6]), encoded([IGNORE, 2, IGNORE]), encoded([IGNORE] * 4)]
    assert scorer.slices, "transformers' Llama slices its hidden states before the LM head"
    chosen = scorer.batch_logits(batch, None)
    scorer.slices = False
    whole = scorer.batch_logits(batch, None)
    assert [len(logits) for logits in chosen] == [len(scored_positions(e)) for e in batch] == [3, 1, 0]
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(chosen, whole, strict=True))


def test_rows_sharing_a_prefix_score_as_they_would_alone(tiny_model, tiny_package):
    """Both scorers compute a prefix rows share once: the package's generator rewinds to it (logits bit
    for bit those of a fresh generator), PyTorch runs it once for the batch (within float noise of
    each row alone, without the prefix cache)."""
    runtime = PackageRuntime(tiny_package)
    prompts = ["Date: 1 May 2020", "Date: 1 May 2021", "Date: 7 June 1999", "Normalize this"]
    rows = []
    for text in prompts:
        prompt = runtime.prompt_tokens([{"role": "user", "content": text}])
        answer = runtime.tokenizer.encode(" 2020-05-01")
        rows.append(Encoded(prompt + list(answer), [IGNORE] * len(prompt) + list(answer), len(prompt) + len(answer)))
    assert shared_prefix([r.input_ids for r in rows]) > 10, "the chat template's prefix"
    rows.append(encoded([IGNORE] * 5))  # nothing scored
    for adapter in (None, "dates"):
        shared = PackageScorer(runtime, adapter, 64)
        for row in sorted(rows, key=lambda r: r.input_ids):
            alone = PackageScorer(runtime, adapter, 64).logits(row)
            assert np.array_equal(shared.logits(row), alone)
    scorer = PyTorchScorer(str(tiny_model("llama")), {})
    batch = rows[:4]
    together = scorer.batch_logits(batch, None)
    scorer.slices = False  # the whole sequence, no prefix cache
    alone = [scorer.batch_logits([row], None)[0] for row in batch]
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(together, alone, strict=True))
    assert [len(t) for t in together] == [len(scored_positions(r)) for r in batch]


@pytest.mark.parametrize("model_type", sorted(TINY_CONFIGS))
def test_pytorch_scores_rows_sharing_a_prefix_as_alone_on_every_family(tiny_model, model_type):
    """The prefix KV cache repeated for a batch (PyTorchScorer.batch_logits) on each family's cache:
    the logits of each row alone, without it."""
    scorer = PyTorchScorer(str(tiny_model(model_type)), {})
    prefix = list(range(100, 120))
    batch = [
        Encoded(prefix + tail, [IGNORE] * (len(prefix) + 1) + tail[1:], len(prefix) + len(tail))
        for tail in ([5, 6, 7], [5, 8, 9, 10], [11, 12])
    ]
    assert scorer.slices, "transformers' own models: the prefix cache applies"
    together = scorer.batch_logits(batch, None)
    scorer.slices = False  # the whole sequence, no prefix cache
    alone = [scorer.batch_logits([row], None)[0] for row in batch]
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(together, alone, strict=True)), model_type


def olive_flows(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "olive_flows", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_broken_parity_fails_the_evaluation_unless_opted_out(tiny_package):
    """The mechanics, on a copy of the tiny package beside it (evaluation reads the rows and PEFT
    adapters there) with a bound it cannot meet: exit code 4 and how to publish anyway; with
    enforce: false, published, and said so. (On a tiny random model even swapped adapters move the
    distributions little; tests/test_quickstart.py breaks the real quickstart's adapters against the
    default bounds.)"""
    copy = tiny_package.parent / "parity-strict"
    shutil.copytree(tiny_package, copy)
    try:
        healthy = olive_flows("eval", str(copy))
        assert healthy.returncode == 0 and "parity: KL divergence at most" in healthy.stdout, healthy.stderr[-2000:]
        strict = olive_flows("eval", str(copy), "evaluation.parity.max_kl=1.0e-12")
        assert strict.returncode == 4, strict.stdout + strict.stderr
        assert "PARITY BROKEN" in strict.stderr and "set evaluation.parity.enforce=false" in strict.stderr
        parity = json.loads((copy / "eval.json").read_text(encoding="utf-8"))["parity"]
        assert not parity["ok"] and parity["enforced"] and {f.split(":")[0] for f in parity["failures"]} >= {"base"}
        opted_out = olive_flows(
            "eval", str(copy), "evaluation.parity.max_kl=1.0e-12", "evaluation.parity.enforce=false"
        )
        assert opted_out.returncode == 0 and "published anyway" in opted_out.stdout, opted_out.stderr[-2000:]
    finally:
        shutil.rmtree(copy)
