"""Rules a JSON Schema cannot express, each a small named function.

A rule takes a Recipe (defaults filled in) and yields Problems. ``RULES`` lists them in the order
they run; every rule runs, so one pass reports every mistake.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from olive_flows import metadata
from olive_flows.data.formats import row_errors
from olive_flows.models.resolve import model_facts, model_ref, model_ref_problems
from olive_flows.recipe.model import Recipe
from olive_flows.validate.problems import Problem, did_you_mean

Rule = Callable[[Recipe], Iterator[Problem]]
RULES: list[Rule] = []
ROWS_CHECKED_AT_VALIDATION = 5


def rule(func: Rule) -> Rule:
    """Register ``func`` as a recipe rule."""
    RULES.append(func)
    return func


def rule_problems(recipe: Recipe) -> list[Problem]:
    """Every problem every rule finds."""
    return [problem for check in RULES for problem in check(recipe)]


def effective_target_modules(recipe: Recipe, adapter: str) -> list[str] | None:
    """The modules an adapter trains: its own list, else its architecture's default (None if unknown)."""
    modules = recipe.adapters[adapter]["target_modules"]
    if modules:
        return list(modules)
    arch = architecture_of(recipe)
    return list(arch["default_target_modules"]) if arch else None


def architecture_of(recipe: Recipe) -> dict | None:
    """olive-flows' metadata for the recipe's model architecture, when the model type is known."""
    if model_ref_problems(recipe):
        return None
    facts = model_facts(model_ref(recipe))
    return metadata.architecture(facts["model_type"]) if facts else None


@rule
def model_reference_resolves(recipe: Recipe) -> Iterator[Problem]:
    """model.id names a known built-in model, an existing local folder or a Hugging Face id."""
    yield from model_ref_problems(recipe)


@rule
def adapter_datasets_exist(recipe: Recipe) -> Iterator[Problem]:
    """Every adapter's dataset is a key of datasets."""
    for name, adapter in recipe.adapters.items():
        if adapter["dataset"] not in recipe.datasets:
            hint = did_you_mean(adapter["dataset"], recipe.datasets) or f"datasets: {', '.join(recipe.datasets)}"
            yield recipe.problem(("adapters", name, "dataset"), f"no dataset named '{adapter['dataset']}'", hint)


@rule
def target_adapters_exist(recipe: Recipe) -> Iterator[Problem]:
    """Every adapter a target ships is defined under adapters."""
    for name, target in recipe.targets.items():
        for i, adapter in enumerate(target["adapters"] or []):
            if adapter not in recipe.adapters:
                hint = did_you_mean(adapter, recipe.adapters) or f"adapters: {', '.join(recipe.adapters)}"
                yield recipe.problem(("targets", name, "adapters", i), f"no adapter named '{adapter}'", hint)


@rule
def target_adapters_share_modules(recipe: Recipe) -> Iterator[Problem]:
    """All adapters in one package train the same modules: they share one base graph."""
    for name in recipe.targets:
        shipped = [a for a in recipe.target_adapters(name) if a in recipe.adapters]
        if not shipped:
            continue
        first = shipped[0]
        expected = effective_target_modules(recipe, first)
        for other in shipped[1:]:
            modules = effective_target_modules(recipe, other)
            if (sorted(modules) if modules else modules) != (sorted(expected) if expected else expected):
                yield recipe.problem(
                    ("adapters", other, "target_modules"),
                    f"target modules {modules} differ from adapter '{first}' ({expected}), and both ship in "
                    f"target '{name}'; adapters in one package share one base graph, so they must train the same modules",
                )


@rule
def target_modules_known(recipe: Recipe) -> Iterator[Problem]:
    """The architecture has a default when none is given, and the modules named exist in it."""
    arch = architecture_of(recipe)
    for name, adapter in recipe.adapters.items():
        modules = adapter["target_modules"]
        if modules is None and arch is None and not model_ref_problems(recipe):
            yield recipe.problem(
                ("adapters", name),
                "olive-flows has no default target modules for this model's architecture",
                "set target_modules (for example [q_proj, v_proj])",
            )
        if modules and arch:
            for i, module in enumerate(modules):
                if module not in arch["lora_modules"]:
                    hint = (
                        did_you_mean(module, arch["lora_modules"]) or f"choose from {', '.join(arch['lora_modules'])}"
                    )
                    yield recipe.problem(
                        ("adapters", name, "target_modules", i),
                        f"'{module}' is not a LoRA module of this architecture",
                        hint,
                    )


@rule
def data_files_match_format(recipe: Recipe) -> Iterator[Problem]:
    """Each data file exists and its first rows are valid rows of the declared format."""
    for name, spec in recipe.datasets.items():
        path = recipe.dataset_file(name)
        where = ("datasets", name, "path")
        if not path.is_file():
            yield recipe.problem(where, f"data file {path} does not exist")
            continue
        checked = 0
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if checked == ROWS_CHECKED_AT_VALIDATION:
                    break
                if not line.strip():
                    continue
                checked += 1
                try:
                    errors = row_errors(json.loads(line), spec["format"])
                except json.JSONDecodeError as exc:
                    errors = [f"invalid JSON ({exc.msg})"]
                if errors:
                    yield recipe.problem(
                        where, f"line {number} of {path.name} is not a {spec['format']} row: {'; '.join(errors)}"
                    )
                    break
        if checked == 0:
            yield recipe.problem(where, f"data file {path} has no rows")


@rule
def provider_matches_device(recipe: Recipe) -> Iterator[Problem]:
    """An explicit provider belongs to the target's device."""
    for name, target in recipe.targets.items():
        provider = target["provider"]
        if provider and metadata.target_profile(provider)["device"] != target["device"]:
            expected = metadata.default_provider(target["device"])
            yield recipe.problem(
                ("targets", name, "provider"),
                f"{provider} does not run on device '{target['device']}'",
                f"use {expected}, or change device",
            )


@rule
def precision_supported_by_target(recipe: Recipe) -> Iterator[Problem]:
    """The precision is one ModelBuilder produces for this provider (Olive would prune it silently)."""
    for name, target in recipe.targets.items():
        provider = target["provider"] or metadata.default_provider(target["device"])
        allowed = metadata.target_profile(provider)["precisions"]
        if target["precision"] not in allowed:
            yield recipe.problem(
                ("targets", name, "precision"),
                f"{target['precision']} is not available for {provider} (device {target['device']})",
                f"choose one of {', '.join(allowed)}",
            )


@rule
def int4_options_need_int4(recipe: Recipe) -> Iterator[Problem]:
    """int4 options on a target of another precision would be ignored silently."""
    for name, target in recipe.raw.get("targets", {}).items():
        if isinstance(target, dict) and "int4" in target and recipe.targets[name]["precision"] != "int4":
            yield recipe.problem(
                ("targets", name, "int4"),
                f"int4 options have no effect with precision {recipe.targets[name]['precision']}",
            )


@rule
def evaluation_metrics_name_datasets(recipe: Recipe) -> Iterator[Problem]:
    """Task metrics are declared for datasets that exist."""
    for dataset in recipe.data["evaluation"]["metrics"]:
        if dataset not in recipe.datasets:
            hint = did_you_mean(dataset, recipe.datasets) or f"datasets: {', '.join(recipe.datasets)}"
            yield recipe.problem(("evaluation", "metrics", dataset), f"no dataset named '{dataset}'", hint, key=True)
