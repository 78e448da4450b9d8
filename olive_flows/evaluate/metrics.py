"""Task metrics that a program can compute from a model's answer and the reference answer.

Each metric maps (prediction, reference) to a score in [0, 1]; a dataset's score is the mean over
its held-out rows. The names are the ones the recipe schema allows under evaluation.metrics.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def exact_match(prediction: str, reference: str) -> float:
    """1 when the answer is the reference, ignoring surrounding whitespace."""
    return float(prediction.strip() == reference.strip())


def contains(prediction: str, reference: str) -> float:
    """1 when the reference appears anywhere in the answer."""
    return float(reference.strip() in prediction)


def _json(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return False, None


def json_valid(prediction: str, reference: str) -> float:
    """1 when the whole answer parses as JSON."""
    return float(_json(prediction.strip())[0])


def json_fields(prediction: str, reference: str) -> float:
    """Share of the reference object's fields that the answer, parsed as a JSON object, reproduces exactly."""
    _, expected = _json(reference)
    if not isinstance(expected, dict) or not expected:
        raise ValueError(f"json_fields needs a JSON object as reference, got {reference!r}")
    ok, actual = _json(prediction.strip())
    if not ok or not isinstance(actual, dict):
        return 0.0
    return sum(1 for key, value in expected.items() if key in actual and actual[key] == value) / len(expected)


METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "json_valid": json_valid,
    "json_fields": json_fields,
    "contains": contains,
}


def score(metric: str, predictions: list[str], references: list[str]) -> float:
    """Mean of ``metric`` over paired predictions and references."""
    func = METRICS[metric]
    return sum(func(p, r) for p, r in zip(predictions, references, strict=True)) / len(references)
