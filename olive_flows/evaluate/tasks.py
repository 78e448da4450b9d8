"""Score the base model and each adapter of a package on their held-out rows, and smoke-test it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olive_flows.data.formats import split_chat
from olive_flows.evaluate.metrics import score
from olive_flows.evaluate.runtime import PackageRuntime

SAMPLES_KEPT = 3


class PackageCheckFailed(Exception):
    """The package could not generate with the base model or an adapter; the CLI exits with code 4."""

    exit_code = 4


def smoke_check(runtime: PackageRuntime, prompt: str, max_new_tokens: int) -> dict[str, str]:
    """Generate for ``prompt`` with no adapter and with each adapter; raise on any error."""
    texts = {}
    messages = [{"role": "user", "content": prompt}]
    for adapter in [None, *runtime.adapter_names]:
        label = adapter or "(base)"
        try:
            texts[label] = runtime.generate(messages, adapter, max_new_tokens)
        except Exception as exc:  # onnxruntime-genai raises plain RuntimeErrors
            raise PackageCheckFailed(f"generation with {label} failed: {exc}") from exc
    return texts


@dataclass
class TaskScores:
    """Scores of one model variant (the base, or one adapter) on one dataset's held-out rows."""

    metrics: dict[str, float]
    samples: list[dict[str, str]] = field(default_factory=list)


def score_rows(
    runtime: PackageRuntime, rows: list[dict[str, Any]], metrics: list[str], adapter: str | None, max_new_tokens: int
) -> TaskScores:
    """Greedy answers to each row's prompt, scored against its reference with every metric."""
    predictions, references = [], []
    for row in rows:
        prompt, reference = split_chat(row)
        predictions.append(runtime.generate(prompt, adapter, max_new_tokens).strip())
        references.append(reference)
    samples = [
        {"prompt": split_chat(row)[0][-1]["content"], "reference": ref, "output": pred}
        for row, ref, pred in zip(rows[:SAMPLES_KEPT], references, predictions, strict=False)
    ]
    return TaskScores({m: score(m, predictions, references) for m in metrics}, samples)


def read_eval_rows(path: Path, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` held-out rows of a prepared dataset."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line, _ in zip(f, range(limit), strict=False)]
