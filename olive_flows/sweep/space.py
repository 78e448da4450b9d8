"""The recipe's ``sweep`` block: what is searched, how, and judged on what; checked before any trial.

A parameter names a recipe field by the dotted path a command-line override uses, and each trial sets
it with exactly such an override. So each candidate value (low, high, every choice) is checked by
loading the recipe with that override: an unknown field or a value the schema refuses gives the
override's own message, reported at the line of the ``sweep`` field that asked for it. The objective
metric and the grid's size are checked with the other rules (validate/rules.py), so ``olive-flows
validate`` reports them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from olive_flows.problems import Problem, UserError
from olive_flows.recipe.model import Recipe
from olive_flows.validate.load import load_recipe

RESERVED = ("sweep", "name", "output", "extends")  # fields a trial cannot vary: they are the sweep itself


@dataclass(frozen=True)
class Parameter:
    """One searched field: a range (low, high, log) or a list of choices."""

    path: str
    low: Any = None
    high: Any = None
    log: bool = False
    choices: tuple = ()

    @property
    def candidates(self) -> list[Any]:
        return list(self.choices) if self.choices else [self.low, self.high]

    @property
    def integer(self) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high))

    def suggest(self, trial: Any) -> Any:
        """The value of this field for an Optuna trial."""
        if self.choices:
            return trial.suggest_categorical(self.path, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.path, self.low, self.high, log=self.log)
        return trial.suggest_float(self.path, float(self.low), float(self.high), log=self.log)


@dataclass(frozen=True)
class Sweep:
    """The ``sweep`` block of a recipe, defaults filled in."""

    trials: int
    metric: str
    direction: str
    sampler: str
    parameters: dict[str, Parameter]

    def adapters(self, recipe: Recipe) -> list[str]:
        """The adapters whose fields are searched (every adapter when none is named): their held-out
        loss is the eval_loss objective."""
        named = [p.split(".")[1] for p in self.parameters if p.startswith("adapters.") and p.count(".") >= 2]
        return [a for a in recipe.adapters if a in named] or list(recipe.adapters)

    def grid(self) -> dict[str, list[Any]]:
        return {path: list(p.choices) for path, p in self.parameters.items()}


def override(path: str, value: Any) -> str:
    """The command-line override that sets ``path`` to ``value`` (the value written as YAML, so that
    it reads back the same: 3e-05 is a string to YAML, 3.0e-05 a number)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return f"{path}={text.removesuffix('...').strip()}"


def read_sweep(recipe: Recipe, ref: str | Path, overrides: Sequence[str] = ()) -> Sweep:
    """The recipe's sweep, every candidate value checked; UserError listing every problem."""
    block = recipe.data.get("sweep")
    if not block:
        hint = "add a sweep block: parameters (field paths with low/high or choices), trials, objective"
        raise UserError([recipe.problem(("sweep",), "the recipe has no sweep block", hint)])
    problems: list[Problem] = []
    parameters: dict[str, Parameter] = {}
    if not block.get("parameters"):
        problems.append(recipe.problem(("sweep",), "sweep.parameters names no field to search"))
    for path, spec in block.get("parameters", {}).items():
        where = ("sweep", "parameters", path)
        parameter = Parameter(
            path, spec.get("low"), spec.get("high"), spec.get("log", False), tuple(spec.get("choices", ()))
        )
        parameters[path] = parameter
        if path.split(".")[0] in RESERVED:
            problems.append(recipe.problem(where, f"a sweep cannot vary {path.split('.')[0]}", key=True))
            continue
        if not parameter.choices and parameter.low > parameter.high:
            problems.append(recipe.problem(where, f"low ({parameter.low}) is above high ({parameter.high})"))
        if parameter.log and not parameter.choices and parameter.low <= 0:
            problems.append(recipe.problem(where, "a log scale needs low above 0"))
        for value in parameter.candidates:
            problems += _candidate_problems(recipe, ref, overrides, where, override(path, value))
    if problems:
        raise UserError(problems)
    objective = block["objective"]
    return Sweep(block["trials"], objective["metric"], objective["direction"], block["sampler"], parameters)


def _candidate_problems(
    recipe: Recipe, ref: str | Path, overrides: Sequence[str], where: tuple, text: str
) -> list[Problem]:
    """What is wrong with the recipe once override ``text`` is applied, reported at ``where``."""
    try:
        load_recipe(ref, [*overrides, text])
    except UserError as exc:
        return [recipe.problem(where, f"{text}: {p.message}", p.hint, key=True) for p in exc.problems]
    return []
