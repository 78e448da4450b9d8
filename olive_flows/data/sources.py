"""Read rows from where a dataset lives, each with the location a message about it should name.

Local files: JSON Lines, JSON (a list of rows), CSV and Parquet; text files in UTF-8, with or without
the byte order mark Windows editors write, with LF or CRLF line ends. A JSON Lines file may be a request
log of ``olive-flows serve`` (or ``chat --log``): its ratings, lines of their own, are folded into
the exchanges they rate, and a last line torn by a crash is skipped with a warning. Hugging Face datasets by id
(through the datasets library, which needs the network unless the dataset is in its cache).
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from olive_flows.paths import display_path
from olive_flows.problems import Location, Problem, UserError

LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".sqlite", ".sqlite3", ".db")
SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


class BadRecord:
    """A row that could not even be parsed (invalid JSON, for example)."""

    def __init__(self, message: str):
        self.message = message


class TornLine(BadRecord):
    """The last line of a JSON Lines file, cut off by a crash while it was being appended."""


def _is_feedback(row: Any) -> bool:
    return isinstance(row, dict) and isinstance(row.get("feedback"), dict) and set(row) <= {"feedback", "created"}


def _iter_jsonl(path: Path, shown: str) -> Iterator[tuple[Location, Any]]:
    """Rows of a JSON Lines file, with the ratings of a request log folded into their exchanges (the
    last rating of an id wins)."""
    rows: list[tuple[Location, Any]] = []
    ratings: dict[Any, dict[str, Any]] = {}
    with open(path, encoding="utf-8-sig") as f:
        lines = list(enumerate(f, start=1))
    for number, line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines) and not line.endswith("\n"):
                rows.append(
                    (Location(shown, number, 1), TornLine("last line cut off (a crash while writing?): skipped"))
                )
            else:
                rows.append((Location(shown, number, exc.colno), BadRecord(f"invalid JSON: {exc.msg}")))
            continue
        if _is_feedback(row):
            ratings[row["feedback"].get("id")] = row["feedback"]
        else:
            rows.append((Location(shown, number, 1), row))
    for where, row in rows:
        rated = ratings.get(row.get("id")) if isinstance(row, dict) and ratings else None
        if rated:
            row = {**row, **{k: v for k, v in rated.items() if k in ("rating", "comment")}}
        yield where, row


def iter_local(path: Path, table: str | None = None) -> Iterator[tuple[Location, Any]]:
    """Rows of a local file with their location (line for JSONL and CSV, row number otherwise).

    SQLite databases are read-only, one ``table``; every other format is one file of rows.
    """
    shown = display_path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _iter_jsonl(path, shown)
    elif suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as exc:
            raise UserError([Problem(Location(shown, exc.lineno, exc.colno), "", f"invalid JSON: {exc.msg}")]) from None
        if not isinstance(rows, list):
            raise UserError([Problem(Location(shown, 1, 1), "", "a .json dataset must be a list of rows")])
        for number, row in enumerate(rows, start=1):
            yield Location(f"{shown} row {number}"), row
    elif suffix == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                yield Location(shown, reader.line_num, 1), row
    elif suffix in SQLITE_SUFFIXES:
        yield from _iter_sqlite(path, shown, table)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for number, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield Location(f"{shown} row {number}"), row
    else:
        raise UserError(
            [Problem(Location(shown), "", f"unsupported data file type; use one of {', '.join(LOCAL_SUFFIXES)}")]
        )


def _iter_sqlite(path: Path, shown: str, table: str | None) -> Iterator[tuple[Location, Any]]:
    if not table:
        raise UserError([Problem(Location(shown), "", "a SQLite dataset needs `table`: the table that holds the rows")])
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    try:
        quoted = '"' + table.replace('"', '""') + '"'
        cursor = connection.execute(f"SELECT rowid AS _rowid_, * FROM {quoted}")
        for row in cursor:
            record = dict(row)
            yield Location(f"{shown} table {table} rowid {record.pop('_rowid_')}"), record
    except sqlite3.Error as exc:
        raise UserError([Problem(Location(shown), "", f"cannot read table '{table}': {exc}")]) from None
    finally:
        connection.close()


def iter_hub(dataset: str, split: str, revision: str | None) -> Iterator[tuple[Location, Any]]:
    """Rows of a Hugging Face dataset split, located as ``hf:<id>[<split>] row N``."""
    import datasets

    try:
        data = datasets.load_dataset(dataset, split=split, revision=revision)
    except Exception as exc:  # the datasets library raises many types for "not reachable / not found"
        raise UserError(
            f"cannot load Hugging Face dataset '{dataset}' (split {split}): {type(exc).__name__}: {exc}. "
            "It needs network access, or the dataset in the local Hugging Face cache."
        ) from None
    for number, row in enumerate(data, start=1):
        yield Location(f"hf:{dataset}[{split}] row {number}"), row
