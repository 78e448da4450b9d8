"""Read a recipe's dataset, check every row, clean, split and write it as normalized JSON Lines.

Steps, in order: read rows (with their line or row number) -> keep rows that meet the rating
filter -> check each row against the format (invalid rows fail the run, or with
``on_error: skip`` are skipped and reported) -> normalize to chat turns or text -> clean (opt-in)
-> split into train / eval / test, identical rows always on the same side -> write.

The split files live in a folder named after a hash of their content. Olive caches a LoRA run by
its config, which only holds the file path, so a path that changes with the content is what keeps
an edited dataset from silently reusing an adapter trained on the old one.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olive_flows.data.clean import clean_rows, row_key
from olive_flows.data.formats import detect_format, normalize, row_errors
from olive_flows.data.sources import BadRecord, TornLine, iter_hub, iter_local
from olive_flows.files import read_jsonl, write_text_atomic
from olive_flows.problems import Location, Problem, UserError
from olive_flows.recipe.model import Recipe

MAX_REPORTED_ROWS = 20
SPLITS = ("train", "eval", "test")


@dataclass
class Report:
    """What happened to a dataset's rows on their way to the split files."""

    read: int = 0
    rating_filtered: int = 0
    skipped: list[Problem] = field(default_factory=list)
    torn: list[Problem] = field(default_factory=list)
    ratings: Counter = field(default_factory=Counter)  # rows by the value of the rating column ("unrated")
    cleaning: dict[str, int] = field(default_factory=dict)
    duplicate_groups: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "rows_read": self.read,
            "rating_filtered": self.rating_filtered,
            "invalid_skipped": len(self.skipped),
            "skipped_rows": [p.format() for p in self.skipped],
            "torn_lines": [p.format() for p in self.torn],
            "cleaning": self.cleaning,
            "rows_with_duplicates": self.duplicate_groups,
        }


@dataclass(frozen=True)
class PreparedDataset:
    """A dataset normalized and split into train, eval and (optionally empty) test JSON Lines files."""

    name: str
    source: str
    format: str
    detected: bool
    sha256: str
    folder: Path
    rows: dict[str, int]
    report: Report

    @property
    def kind(self) -> str:
        """ "chat" (prompt and answer turns) or "text" (plain text)."""
        return "text" if self.format == "text" else "chat"

    @property
    def train_file(self) -> Path:
        return self.folder / "train.jsonl"

    @property
    def eval_file(self) -> Path:
        return self.folder / "eval.jsonl"

    @property
    def train_rows(self) -> int:
        return self.rows["train"]

    @property
    def eval_rows(self) -> int:
        return self.rows["eval"]

    @property
    def scored_file(self) -> Path:
        """The held-out rows task metrics are computed on."""
        return self.folder / f"{scored_split(self.rows)}.jsonl"


def scored_split(rows: dict[str, int]) -> str:
    """The split task metrics are computed on, from the rows per split: test when there is one, else eval."""
    return "test" if rows["test"] else "eval"


def records(recipe: Recipe, name: str, key: str = "path") -> Iterable[tuple[Location, Any]]:
    """Rows of dataset ``name`` (its ``path`` or ``eval_path`` file, or its Hugging Face split)."""
    spec = recipe.datasets[name]
    if key in spec:
        return iter_local(recipe.data_file(name, key), spec.get("table"))
    return iter_hub(spec["hf"], spec["split"], spec.get("revision"))


def declared_format(spec: dict[str, Any], first_row: Any) -> tuple[str | None, bool]:
    """The dataset's format and whether it was detected rather than declared."""
    if spec.get("template"):
        return "template", False
    if spec.get("format"):
        return spec["format"], False
    return detect_format(first_row), True


def _meets_rating(row: Any, rating: dict[str, Any] | None) -> bool:
    if not rating or not isinstance(row, dict):
        return True
    value = row.get(rating["column"])
    try:
        return value is not None and float(value) >= rating["min"]
    except (TypeError, ValueError):
        return False


def _verdict(row: Any, fmt: str | None, detected: bool, template: Any) -> str:
    if isinstance(row, BadRecord) or fmt is None:
        return ""
    if template:
        return "does not fit the template: "
    return f"not a valid {fmt} row{' (format detected from the first row)' if detected else ''}: "


def normalize_rows(
    rows: Iterable[tuple[Location, Any]],
    spec: dict[str, Any],
    report: Report | None = None,
    locations: list[Location] | None = None,
) -> tuple[list[dict], str | None, bool]:
    """Check and normalize located rows; return them, their format and whether it was detected.

    Invalid rows raise one UserError naming each (the first MAX_REPORTED_ROWS), or with
    ``on_error: skip`` are recorded in ``report`` and left out. ``locations``, when given, receives
    the location of each row returned.
    """
    report = report if report is not None else Report()
    template = spec.get("template")
    normalized, problems = [], []
    fmt: str | None = None
    detected = False
    for where, row in rows:
        if isinstance(row, TornLine):
            report.torn.append(Problem(where, "", row.message, severity="warning"))
            continue
        report.read += 1
        if isinstance(row, dict):
            value = row.get((spec.get("rating") or {}).get("column", "rating"))
            report.ratings["unrated" if value is None else str(value)] += 1
        if not _meets_rating(row, spec.get("rating")):
            report.rating_filtered += 1
            continue
        if fmt is None and not isinstance(row, BadRecord):  # the first readable row decides
            fmt, detected = declared_format(spec, row)
        errors = [row.message] if isinstance(row, BadRecord) else row_errors(row, None if template else fmt, template)
        if errors:
            problems.append(Problem(where, "", _verdict(row, fmt, detected, template) + "; ".join(errors)))
        else:
            normalized.append(normalize(row, fmt, template))
            if locations is not None:
                locations.append(where)
    if problems and spec.get("on_error", "fail") == "skip":
        report.skipped += problems
    elif problems:
        shown = problems[:MAX_REPORTED_ROWS]
        if len(problems) > len(shown):
            shown.append(Problem(problems[-1].location, "", f"... and {len(problems) - len(shown)} more invalid rows"))
        raise UserError(shown)
    if not normalized:
        raise UserError("the dataset has no usable rows")
    return normalized, fmt, detected


def read_dataset(
    recipe: Recipe, name: str, key: str = "path", report: Report | None = None
) -> tuple[list[dict], str | None, bool]:
    """Normalized rows of a dataset's ``key`` source; a problem without a row is located at the dataset."""
    try:
        return normalize_rows(records(recipe, name, key), recipe.datasets[name], report)
    except UserError as exc:
        if exc.problems:
            raise
        raise UserError([Problem(recipe.location(("datasets", name)), f"datasets.{name}", exc.text)]) from None


def split_rows(rows: list[Any], fractions: tuple[float, float], seed: int) -> tuple[list[Any], list[Any], list[Any]]:
    """Deterministic train / eval / test split by seed; identical rows always land on the same side.

    ``fractions`` are the eval and test shares. Groups of identical rows are shuffled and dealt out,
    so no row of the held-out sets also appears in training.
    """
    groups: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(row_key(row), []).append(index)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    wanted = [max(1, math.ceil(len(rows) * f)) if f else 0 for f in fractions]
    sides: list[list[int]] = [[], [], []]
    for members in order:
        side = next((s + 1 for s in range(2) if len(sides[s + 1]) < wanted[s]), 0)
        sides[side] += members
    if not sides[0]:
        raise UserError(f"no rows left to train on after holding out {sum(fractions):.0%} of {len(rows)} rows")
    return tuple([rows[i] for i in sorted(side)] for side in sides)  # type: ignore[return-value]


def _jsonl(rows: list[Any]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)


def _write_splits(data_dir: Path, name: str, splits: dict[str, list[Any]]) -> tuple[str, Path]:
    texts = {split: _jsonl(rows) for split, rows in splits.items()}
    digest = hashlib.sha256("\0".join(texts[s] for s in SPLITS).encode()).hexdigest()
    folder = data_dir / f"{name}-{digest[:12]}"
    if not all((folder / f"{s}.jsonl").is_file() for s in SPLITS):
        for split in SPLITS:
            write_text_atomic(folder / f"{split}.jsonl", texts[split])
    return digest, folder


def prepare_dataset(recipe: Recipe, name: str, data_dir: Path, _prepared: dict | None = None) -> PreparedDataset:
    """Check, normalize, clean and split dataset ``name``; write its split files (once per content)."""
    spec = recipe.datasets[name]
    if "mix" in spec:
        return _prepare_mix(recipe, name, data_dir, _prepared if _prepared is not None else {})
    report = Report()
    rows, fmt, detected = read_dataset(recipe, name, report=report)
    rows, report.cleaning = clean_rows(rows, spec["clean"])
    report.duplicate_groups = len(rows) - len({row_key(r) for r in rows})
    if "eval_path" in spec:
        held_out = clean_rows(read_dataset(recipe, name, "eval_path")[0], spec["clean"])[0]
        train, _, test = split_rows(rows, (0.0, spec["test_split"]), spec["seed"])
        keys = {row_key(r) for r in held_out}
        train = [r for r in train if row_key(r) not in keys]
        splits = {"train": train, "eval": held_out, "test": test}
    else:
        train, evaluation, test = split_rows(rows, (spec["eval_split"], spec["test_split"]), spec["seed"])
        splits = {"train": train, "eval": evaluation, "test": test}
    if spec["max_samples"]:
        splits["train"] = splits["train"][: spec["max_samples"]]
    digest, folder = _write_splits(data_dir, name, splits)
    source = spec.get("path") or f"hf:{spec['hf']}[{spec['split']}]"
    counts = {split: len(rows) for split, rows in splits.items()}
    return PreparedDataset(name, source, fmt, detected, digest, folder, counts, report)


def _prepare_mix(recipe: Recipe, name: str, data_dir: Path, prepared: dict[str, PreparedDataset]) -> PreparedDataset:
    """A weighted mix of other datasets: train rows drawn in proportion to the weights, held-out rows pooled."""
    spec = recipe.datasets[name]
    parts = {}
    for part in spec["mix"]:
        if part not in prepared:
            prepared[part] = prepare_dataset(recipe, part, data_dir, prepared)
        parts[part] = prepared[part]
    kinds = {p.kind for p in parts.values()}
    if len(kinds) > 1:
        raise UserError([recipe.problem(("datasets", name, "mix"), "cannot mix chat and text datasets")])
    total_weight = sum(spec["mix"].values())
    total_rows = sum(p.train_rows for p in parts.values())
    rng = random.Random(spec["seed"])
    splits: dict[str, list[Any]] = {split: [] for split in SPLITS}
    for part_name, part in parts.items():
        pool = read_jsonl(part.folder / "train.jsonl")
        wanted = round(total_rows * spec["mix"][part_name] / total_weight)
        drawn = []
        while len(drawn) < wanted:  # cycle through shuffled copies: oversampling repeats rows evenly
            batch = list(pool)
            rng.shuffle(batch)
            drawn += batch[: wanted - len(drawn)]
        splits["train"] += drawn
        for split in ("eval", "test"):
            splits[split] += read_jsonl(part.folder / f"{split}.jsonl")
    rng.shuffle(splits["train"])
    if spec["max_samples"]:
        splits["train"] = splits["train"][: spec["max_samples"]]
    digest, folder = _write_splits(data_dir, name, splits)
    fmt = next(iter(parts.values())).format if len({p.format for p in parts.values()}) == 1 else "mixed"
    source = "mix of " + ", ".join(f"{p} x{w}" for p, w in spec["mix"].items())
    counts = {split: len(rows) for split, rows in splits.items()}
    return PreparedDataset(name, source, fmt, False, digest, folder, counts, Report())
