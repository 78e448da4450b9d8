"""Read a recipe's dataset, check every row, normalize it and split it into train and held-out files.

The split files live in a folder named after a hash of the normalized rows and the split settings.
Olive caches a LoRA run by its config, which only holds the file path, so a path that changes with
the content is what keeps an edited dataset from silently reusing an adapter trained on the old one.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olive_flows.data.formats import detect_format, normalize, row_errors
from olive_flows.data.sources import BadRecord, iter_hub, iter_local
from olive_flows.files import write_text_atomic
from olive_flows.recipe.model import Recipe
from olive_flows.validate.problems import Location, Problem, UserError

MAX_REPORTED_ROWS = 20


@dataclass(frozen=True)
class PreparedDataset:
    """A dataset normalized and split into train and eval JSONL files under the recipe's work folder."""

    name: str
    source: str
    format: str
    detected: bool
    sha256: str
    train_file: Path
    eval_file: Path
    train_rows: int
    eval_rows: int

    @property
    def kind(self) -> str:
        """ "chat" (prompt and answer turns) or "text" (plain text)."""
        return "text" if self.format == "text" else "chat"


def records(recipe: Recipe, name: str, key: str = "path"):
    """Rows of dataset ``name`` (its ``path`` or ``eval_path`` file, or its Hugging Face split)."""
    spec = recipe.datasets[name]
    if key in spec:
        return iter_local(recipe.data_file(name, key))
    return iter_hub(spec["hf"], spec["split"], spec.get("revision"))


def declared_format(spec: dict[str, Any], first_row: Any) -> tuple[str | None, bool]:
    """The dataset's format and whether it was detected rather than declared."""
    if spec.get("template"):
        return "template", False
    if spec["format"]:
        return spec["format"], False
    return detect_format(first_row), True


def read_rows(recipe: Recipe, name: str, key: str = "path") -> tuple[list[dict], str | None, bool]:
    """Normalized rows of a dataset, its format and whether it was detected; every bad row is reported."""
    spec = recipe.datasets[name]
    try:
        return normalize_rows(records(recipe, name, key), spec["format"], spec.get("template"))
    except UserError as exc:
        if exc.problems:
            raise
        raise UserError([Problem(recipe.location(("datasets", name)), f"datasets.{name}", exc.text)]) from None


def normalize_rows(
    rows: Iterable[tuple[Location, Any]], fmt: str | None, template: dict[str, str] | None = None
) -> tuple[list[dict], str | None, bool]:
    """Check and normalize located rows; return them, their format and whether it was detected.

    Raises UserError naming every bad row (the first MAX_REPORTED_ROWS of them) by its location.
    """
    spec = {"format": fmt, "template": template}
    normalized, problems = [], []
    detected = False
    for count, (where, row) in enumerate(rows):
        if count == 0:
            fmt, detected = declared_format(spec, row)
        errors = [row.message] if isinstance(row, BadRecord) else row_errors(row, None if template else fmt, template)
        if errors:
            problems.append(Problem(where, "", "; ".join(errors)))
        else:
            normalized.append(normalize(row, fmt, template))
    if problems:
        shown = problems[:MAX_REPORTED_ROWS]
        if len(problems) > len(shown):
            shown.append(Problem(problems[-1].location, "", f"... and {len(problems) - len(shown)} more invalid rows"))
        raise UserError(shown)
    if not normalized:
        raise UserError("the dataset has no rows")
    return normalized, fmt, detected


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
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)


def prepare_dataset(recipe: Recipe, name: str, data_dir: Path) -> PreparedDataset:
    """Check dataset ``name`` row by row, normalize it and write its split files (once per content)."""
    spec = recipe.datasets[name]
    rows, fmt, detected = read_rows(recipe, name)
    if "eval_path" in spec:
        train, evaluation = rows, read_rows(recipe, name, "eval_path")[0]
    else:
        train, evaluation = split_rows(rows, spec["eval_split"], spec["seed"])
    if spec["max_samples"]:
        train = train[: spec["max_samples"]]
    train_text, eval_text = _jsonl(train), _jsonl(evaluation)
    digest = hashlib.sha256((train_text + "\0" + eval_text).encode()).hexdigest()
    folder = data_dir / f"{name}-{digest[:12]}"
    train_file, eval_file = folder / "train.jsonl", folder / "eval.jsonl"
    if not (train_file.is_file() and eval_file.is_file()):
        write_text_atomic(eval_file, eval_text)
        write_text_atomic(train_file, train_text)
    source = spec.get("path") or f"hf:{spec['hf']}[{spec['split']}]"
    return PreparedDataset(name, source, fmt, detected, digest, train_file, eval_file, len(train), len(evaluation))
