"""Task metrics computed from a model's answers and the reference answers of held-out rows.

Every metric maps paired lists of predictions and references to one score in [0, 1]: most are the
mean of a per-row score, BLEU is corpus-level. The names are those the recipe schema allows under
``evaluation.metrics``; ``regex:<pattern>`` scores answers that match the pattern in full.

``exact_match`` and ``contains`` compare strings as they are given; ``score`` first applies the
normalizations a recipe lists under ``evaluation.normalize`` to both sides (``NORMALIZE``, in its
order). The other metrics parse, tokenize or pattern-match the answer themselves.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Collection
from functools import cache
from typing import Any

REGEX_PREFIX = "regex:"
# SQuAD's articles: whole words in any case, with the whitespace after them.
_ARTICLE = re.compile(r"\b(?:a|an|the)\b\s*", re.IGNORECASE)

# Applied in this order (SQuAD's): removing punctuation and articles leaves runs of whitespace to collapse.
NORMALIZE: dict[str, Callable[[str], str]] = {
    "case": str.casefold,
    "punctuation": lambda text: "".join(c for c in text if not unicodedata.category(c).startswith("P")),
    "articles": lambda text: _ARTICLE.sub("", text),
    "whitespace": lambda text: " ".join(text.split()),
}
NORMALIZED_METRICS = ("exact_match", "contains")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def normalized(text: str, names: Collection[str]) -> str:
    """``text`` after the normalizations ``names`` lists, applied in ``NORMALIZE``'s order."""
    if unknown := set(names) - NORMALIZE.keys():
        raise ValueError(f"unknown normalization {sorted(unknown)}; expected some of {list(NORMALIZE)}")
    for name, step in NORMALIZE.items():
        if name in names:
            text = step(text)
    return text


def metric_label(metric: str, names: Collection[str] | None) -> str:
    """``metric`` as reports name it: exact_match and contains say how they normalized (None: unknown)."""
    if names is None or metric not in NORMALIZED_METRICS:
        return metric
    steps = [name for name in NORMALIZE if name in names]
    return f"{metric} (normalized: {', '.join(steps)})" if steps else f"{metric} (strict)"


def exact_match(prediction: str, reference: str) -> float:
    """1 when the answer is the reference."""
    return float(prediction == reference)


def contains(prediction: str, reference: str) -> float:
    """1 when the reference appears anywhere in the answer."""
    return float(reference in prediction)


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


@cache
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (longest common subsequence of words), from Google's rouge-score package."""
    return _rouge().score(reference, prediction)["rougeL"].fmeasure


def bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU from sacrebleu, on a 0-1 scale."""
    import sacrebleu

    return sacrebleu.corpus_bleu(predictions, [references]).score / 100


PER_ROW: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "json_valid": json_valid,
    "json_fields": json_fields,
    "contains": contains,
    "rouge_l": rouge_l,
}
CORPUS: dict[str, Callable[[list[str], list[str]], float]] = {"bleu": bleu}
METRIC_NAMES = (*PER_ROW, *CORPUS)


def score(metric: str, predictions: list[str], references: list[str], normalize: Collection[str] = ()) -> float:
    """``metric`` over paired predictions and references; exact_match and contains compare them after the
    ``normalize`` steps (none: byte for byte)."""
    if len(predictions) != len(references) or not references:
        raise ValueError("need as many predictions as references, and at least one")
    if metric in NORMALIZED_METRICS:
        predictions = [normalized(p, normalize) for p in predictions]
        references = [normalized(r, normalize) for r in references]
    if metric.startswith(REGEX_PREFIX):
        pattern = re.compile(metric.removeprefix(REGEX_PREFIX))
        return _mean([float(bool(pattern.fullmatch(p.strip()))) for p in predictions])
    if metric in CORPUS:
        return CORPUS[metric](predictions, references)
    return _mean([PER_ROW[metric](p, r) for p, r in zip(predictions, references, strict=True)])


# How what json.loads accepts starts: a JSON value's first character, or a whole literal (Python's
# NaN and Infinity included).
_JSON_STARTS = frozenset('{["-0123456789')
_JSON_LITERALS = ("true", "false", "null", "NaN", "Infinity")


def _may_be_json(text: str) -> bool:
    """False when no text added to ``text`` makes it parse with json.loads."""
    text = text.lstrip()
    return not text or text[0] in _JSON_STARTS or any(text[: len(w)] == w[: len(text)] for w in _JSON_LITERALS)


# Per metric: whether text added to an answer can still change its score, given the answer so far,
# its normalized whole words, and the normalized reference. A metric not listed stays open.
_OPEN: dict[str, Callable[[str, str, str], bool]] = {
    "exact_match": lambda answer, words, reference: reference.startswith(words),
    "contains": lambda answer, words, reference: reference not in words,
    "json_valid": lambda answer, words, reference: _may_be_json(answer),
    "json_fields": lambda answer, words, reference: answer.lstrip()[:1] in ("", "{"),
}


def settled(metrics: Collection[str], answer: str, reference: str, normalize: Collection[str] = ()) -> bool:
    """True when no text added to ``answer``, an answer still being generated, can change its score
    on any of ``metrics`` against ``reference``: evaluation stops generating it there.

    exact_match and contains rely on each ``NORMALIZE`` step mapping a prefix of the answer to a
    prefix of what the whole answer normalizes to; ``articles`` does so only for whole words ('a'
    normalizes to nothing, 'and' does not), so with it they read the answer up to its last
    whitespace. json_valid is settled (at 0) by a start no JSON value has, json_fields by any start
    but an object's."""
    words = answer
    if "articles" in normalize:
        words = answer[: max((i + 1 for i, c in enumerate(answer) if c.isspace()), default=0)]
    words, reference = normalized(words, normalize), normalized(reference, normalize)
    return not any(_OPEN.get(metric, lambda *_: True)(answer, words, reference) for metric in metrics)
