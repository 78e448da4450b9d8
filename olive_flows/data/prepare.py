"""Read a recipe's dataset, check every row, and split it into train and held-out files.

The split files are named after a hash of the source bytes and the split settings. Olive caches
a LoRA run by its config, which only holds the file path, so a path that changes with the content
is what keeps an edited dataset from silently reusing an adapter trained on the old one.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olive_flows.data.formats import row_errors
from olive_flows.files import sha256_file, write_text_atomic
from olive_flows.paths import display_path
from olive_flows.recipe.model import Recipe
from olive_flows.validate.problems import Location, Problem, UserError

MAX_REPORTED_ROWS = 20


@dataclass(frozen=True)
class PreparedDataset:
    """A dataset split into train and eval JSONL files under the run's work folder."""

    name: str
    source: Path
    sha256: str
    train_file: Path
    eval_file: Path
    train_rows: int
    eval_rows: int


def read_rows(path: Path, fmt: str) -> list[dict[str, Any]]:
    """All rows of a JSON Lines file; every invalid row is reported with its line number."""
    display = display_path(path)
    rows, problems = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(Problem(Location(display, number, exc.colno), "", f"invalid JSON: {exc.msg}"))
                continue
            errors = row_errors(row, fmt)
            if errors:
                problems.append(
                    Problem(Location(display, number, 1), "", f"not a valid {fmt} row: {'; '.join(errors)}")
                )
            else:
                rows.append(row)
    if problems:
        shown = problems[:MAX_REPORTED_ROWS]
        if len(problems) > len(shown):
            more = len(problems) - len(shown)
            shown.append(Problem(Location(display), "", f"... and {more} more invalid rows"))
        raise UserError(shown)
    if not rows:
        raise UserError([Problem(Location(display), "", "the file has no rows")])
    return rows


def split_rows(rows: list[Any], eval_fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Deterministic train/eval split: the same rows, fraction and seed always give the same split."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(rows) - 1, max(1, math.ceil(len(rows) * eval_fraction)))
    held_out = set(order[:n_eval])
    train = [row for i, row in enumerate(rows) if i not in held_out]
    evaluation = [row for i, row in enumerate(rows) if i in held_out]
    return train, evaluation


def _jsonl(rows: list[Any]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def prepare_dataset(recipe: Recipe, name: str, data_dir: Path) -> PreparedDataset:
    """Check dataset ``name`` row by row and write its split files (once per content and settings)."""
    spec = recipe.datasets[name]
    source = recipe.dataset_file(name)
    source_hash = sha256_file(source)
    settings = json.dumps([source_hash, spec["format"], spec["eval_split"], spec["seed"], spec["max_samples"]])
    folder = data_dir / f"{name}-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"
    train_file, eval_file = folder / "train.jsonl", folder / "eval.jsonl"
    rows = read_rows(source, spec["format"])
    train, evaluation = split_rows(rows, spec["eval_split"], spec["seed"])
    if spec["max_samples"]:
        train = train[: spec["max_samples"]]
    if not (train_file.is_file() and eval_file.is_file()):
        write_text_atomic(eval_file, _jsonl(evaluation))
        write_text_atomic(train_file, _jsonl(train))
    return PreparedDataset(name, source, source_hash, train_file, eval_file, len(train), len(evaluation))
