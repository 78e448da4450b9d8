"""User mistakes, reported all at once with the file, line, column and field they are about."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """Where a value sits: a file (or the command line) and a 1-based line and column."""

    source: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.source
        return f"{self.source}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe or its data, phrased for the person who has to fix it."""

    location: Location
    field: str
    message: str
    hint: str | None = None
    severity: str = "error"  # or "warning": reported, but does not stop the recipe

    def format(self) -> str:
        """``file:line:col: field: message; hint``, the form editors and terminals link to."""
        label = "warning: " if self.severity == "warning" else ""
        text = f"{self.location}: {label}{self.field + ': ' if self.field else ''}{self.message}"
        return f"{text}; {self.hint}" if self.hint else text


class UserError(Exception):
    """A mistake the user can fix; the CLI prints it without a traceback and exits with code 2."""

    exit_code = 2

    def __init__(self, problems: Iterable[Problem] | str):
        if isinstance(problems, str):
            self.problems: list[Problem] = []
            self.text = problems
        else:
            self.problems = sorted(problems, key=_order)
            self.text = "\n".join(p.format() for p in self.problems)
        super().__init__(self.text)


def _order(problem: Problem) -> tuple:
    loc = problem.location
    unplaced = loc.line is None
    return (loc.source, unplaced, loc.line or 0, loc.column or 0, problem.field)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A "did you mean 'x'?" hint for a misspelled key or name, or None when nothing is close."""
    choices = sorted(set(choices))
    matches = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    if not matches:  # a known name inside a longer one, as in Olive's lora_r for r
        matches = [c for c in choices if c in re.split(r"[_.\-]", str(word))]
    return f"did you mean '{matches[0]}'?" if len(matches) == 1 else None


def field_path(parts: Iterable[str | int]) -> str:
    """Dotted field path with list indexes in brackets: ``targets.cpu.adapters[1]``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text
