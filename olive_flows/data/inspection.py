"""``olive-flows data check``: every problem of a dataset, and what training will make of it.

Reports each invalid row with its line (or row) number, then a summary: rows, what the rating
filter and cleaning removed, duplicates, role counts, token-length percentiles after the chat
template, and the rows each adapter's max_seq_len truncates or leaves without an answer to learn.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from olive_flows.data.clean import clean_rows, row_key
from olive_flows.data.prepare import Report, normalize_rows
from olive_flows.data.tokenize import encode, percentiles
from olive_flows.problems import Location, Problem


@dataclass
class Tokenization:
    """One way the rows are tokenized for training (an adapter's settings)."""

    label: str
    max_seq_len: int
    loss_on: str = "assistant"


@dataclass
class CheckResult:
    """Everything ``data check`` found about one dataset."""

    name: str
    format: str | None = None
    detected: bool = False
    problems: list[Problem] = field(default_factory=list)  # invalid rows
    notes: list[Problem] = field(default_factory=list)  # truncated rows, rows with nothing to learn
    summary: dict[str, Any] = field(default_factory=dict)
    fails_run: bool = False


def check_rows(
    name: str,
    records: Any,
    spec: dict[str, Any],
    tokenizer: Any,
    tokenizations: list[Tokenization],
) -> CheckResult:
    """Check every row of one dataset; tokenize the valid ones for each tokenization given."""
    result = CheckResult(name)
    report = Report()
    locations: list[Location] = []
    rows, result.format, result.detected = normalize_rows(records, {**spec, "on_error": "skip"}, report, locations)
    result.problems = report.skipped
    result.fails_run = bool(report.skipped) and spec.get("on_error", "fail") == "fail"
    cleaned, cleaning = clean_rows(rows, spec.get("clean") or {})
    roles = Counter(m["role"] for row in rows for m in row.get("messages", []))
    duplicates = len(rows) - len({row_key(r) for r in rows})
    result.summary = {
        "format": result.format,
        "format_detected": result.detected,
        "rows_read": report.read,
        "rating_filtered": report.rating_filtered,
        "ratings": dict(sorted(report.ratings.items())) if set(report.ratings) - {"unrated"} else {},
        "invalid": len(report.skipped),
        "valid": len(rows),
        "exact_duplicates": duplicates,
        "after_cleaning": len(cleaned),
        "cleaning": cleaning,
        "roles": dict(sorted(roles.items())),
    }
    for setting in tokenizations:
        loss_on = setting.loss_on if result.format != "text" else "all"
        lengths, truncated, empty = [], 0, 0
        for row, where in zip(rows, locations, strict=True):
            example = encode(tokenizer, row, setting.max_seq_len, loss_on)
            lengths.append(example.full_length)
            if example.learned == 0:
                empty += 1
                result.notes.append(
                    Problem(
                        where,
                        "",
                        f"{setting.label}: nothing left to learn within max_seq_len {setting.max_seq_len}; dropped",
                        severity="warning",
                    )
                )
            elif example.truncated:
                truncated += 1
                result.notes.append(
                    Problem(
                        where,
                        "",
                        f"{setting.label}: {example.full_length} tokens, longer than max_seq_len {setting.max_seq_len}; truncated",
                        severity="warning",
                    )
                )
        result.summary[setting.label] = {
            "max_seq_len": setting.max_seq_len,
            "loss_on": loss_on,
            "token_length": percentiles(lengths),
            "truncated": truncated,
            "dropped_nothing_to_learn": empty,
        }
    return result
