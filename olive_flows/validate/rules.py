"""Rules a JSON Schema cannot express, each a small named function.

A rule takes a Recipe (defaults filled in) and yields Problems: errors, or warnings that are
reported while the recipe still runs. ``RULES`` lists them in the order they run; every rule runs,
so one pass reports every mistake. When the recipe already broke the schema, a rule that trips
over the malformed part is skipped instead of failing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

from olive_flows import metadata
from olive_flows.data.prepare import declared_format, normalize_rows
from olive_flows.data.sources import SQLITE_SUFFIXES, BadRecord, iter_local
from olive_flows.models.architecture import adapter_modules, architecture_of
from olive_flows.models.imported import (
    ImportedAdapter,
    NotAnAdapter,
    imported_folder,
    is_hub_id,
    read_imported,
    shape_problems,
)
from olive_flows.models.resolve import BUILTIN_PREFIX, model_config, model_facts, model_ref, model_ref_problems
from olive_flows.paths import display_path
from olive_flows.problems import Problem, UserError, did_you_mean
from olive_flows.recipe.distributed import DistributedConfigError, strategy
from olive_flows.recipe.model import Recipe
from olive_flows.recipe.views import EVALS_PER_TRAINING

Rule = Callable[[Recipe], Iterator[Problem]]
RULES: list[Rule] = []
ROWS_CHECKED_AT_VALIDATION = 5
GRID_LIMIT = 64  # combinations a grid sweep may have


def rule(func: Rule) -> Rule:
    """Register ``func`` as a recipe rule."""
    RULES.append(func)
    return func


def rule_problems(recipe: Recipe, *, tolerant: bool = False) -> list[Problem]:
    """Every problem every rule finds; ``tolerant`` skips rules that fail on a malformed recipe."""
    found = []
    for check in RULES:
        try:
            found += list(check(recipe))
        except (KeyError, TypeError, AttributeError, ValueError, IndexError):
            if not tolerant:
                raise
    return found


def _unknown(kind: str, name: str, known) -> tuple[str, str]:
    return f"no {kind} named '{name}'", did_you_mean(name, known) or f"{kind}s: {', '.join(known) or 'none'}"


@rule
def model_reference_resolves(recipe: Recipe) -> Iterator[Problem]:
    """model.id names a known built-in model, an existing local folder or a Hugging Face id."""
    yield from model_ref_problems(recipe)


def _known_facts(recipe: Recipe) -> dict | None:
    """model_type and layer count of a model that resolves, when its config.json or metadata is at hand."""
    return None if model_ref_problems(recipe) else model_facts(model_ref(recipe))


@rule
def model_architecture_supported(recipe: Recipe) -> Iterator[Problem]:
    """A model whose config is known has an architecture olive-flows can train and export, and a layer count.

    A Hub model that is neither cached nor in metadata/known_models.json is not known here; a recipe
    that relies on its architecture's defaults is refused by target_modules_known."""
    facts = _known_facts(recipe)
    if facts is None:
        return
    where = ("model", "id")
    supported = sorted(metadata.load("architectures")["architectures"])
    model_type, layers = facts["model_type"], facts["num_hidden_layers"]
    if model_type is None:
        yield recipe.problem(
            where,
            "the model's config.json has no model_type, so its architecture is unknown",
            f"supported model types: {', '.join(supported)}",
        )
    elif model_type not in supported:
        yield recipe.problem(
            where,
            f"model type '{model_type}' is not one olive-flows can train and export with LoRA adapters",
            f"supported: {', '.join(supported)}",
        )
    elif layers is None:
        yield recipe.problem(
            where,
            f"the model's config.json (model type '{model_type}') has no num_hidden_layers, "
            "the layer count the ONNX export needs",
        )
    elif isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        yield recipe.problem(
            where,
            f"the model's config.json has num_hidden_layers {json.dumps(layers)}; expected a positive whole number",
        )


SOURCE_KEYS = ("path", "hf", "mix")
ONLY_WITH = {"split": "hf", "revision": "hf", "table": "path"}
NOT_WITH_MIX = ("format", "template", "rating", "on_error", "clean", "eval_split", "eval_path", "test_split", "table")


@rule
def dataset_has_one_source(recipe: Recipe) -> Iterator[Problem]:
    """A dataset is a local file (path), a Hugging Face split (hf and split) or a mix: exactly one."""
    for name, spec in recipe.datasets.items():
        where = ("datasets", name)
        raw = recipe.raw["datasets"][name]
        if sum(key in spec for key in SOURCE_KEYS) != 1:
            yield recipe.problem(where, "set exactly one of path (a local file), hf (a Hugging Face dataset) or mix")
            continue
        if "hf" in spec and "split" not in spec:
            yield recipe.problem(where, "a Hugging Face dataset needs a split (for example split: train)")
        for key, needs in ONLY_WITH.items():
            if key in raw and needs not in spec:
                yield recipe.problem((*where, key), f"{key} applies only to datasets with {needs}")
        if "path" in spec and Path(spec["path"]).suffix.lower() in SQLITE_SUFFIXES and "table" not in spec:
            yield recipe.problem((*where, "path"), "a SQLite database needs `table`: the table that holds the rows")
        if "mix" in spec:
            for key in NOT_WITH_MIX:
                if key in raw:
                    yield recipe.problem((*where, key), f"{key} does not apply to a mix; set it on the mixed datasets")


@rule
def mix_parts_exist(recipe: Recipe) -> Iterator[Problem]:
    """A mix names datasets that exist and are not mixes themselves."""
    for name, spec in recipe.datasets.items():
        for part in spec.get("mix", {}):
            where = ("datasets", name, "mix", part)
            if part not in recipe.datasets:
                yield recipe.problem(where, *_unknown("dataset", part, recipe.datasets), key=True)
            elif "mix" in recipe.datasets[part]:
                yield recipe.problem(where, "a mix cannot contain another mix", key=True)


@rule
def template_replaces_format(recipe: Recipe) -> Iterator[Problem]:
    """A template builds the chat turns itself, so a format beside it would be ignored."""
    for name, spec in recipe.datasets.items():
        if spec.get("template") and spec["format"]:
            yield recipe.problem(("datasets", name, "format"), "a template replaces format; remove one of them")


@rule
def adapter_datasets_exist(recipe: Recipe) -> Iterator[Problem]:
    """Every adapter's dataset is a key of datasets."""
    for name, adapter in recipe.adapters.items():
        if adapter.get("dataset") is not None and adapter["dataset"] not in recipe.datasets:
            yield recipe.problem(
                ("adapters", name, "dataset"), *_unknown("dataset", adapter["dataset"], recipe.datasets)
            )


# What an adapter trained elsewhere brings with it (its adapter_config.json), so a recipe cannot set it.
IMPORTED_EXCLUDES = ("dataset", "training", "method", "r", "alpha", "dropout", "target_modules")


@rule
def adapter_has_one_source(recipe: Recipe) -> Iterator[Problem]:
    """An adapter is trained here on a dataset, or was trained elsewhere (from): one of the two."""
    for name, raw in recipe.raw.get("adapters", {}).items():
        if not isinstance(raw, dict):
            continue
        if "from" not in raw:
            if "dataset" not in raw:
                yield recipe.problem(
                    ("adapters", name), "set dataset (the rows to train it on), or from (an adapter trained elsewhere)"
                )
            continue
        for key in IMPORTED_EXCLUDES:
            if key in raw:
                yield recipe.problem(
                    ("adapters", name, key),
                    f"{key} does not apply to an adapter trained elsewhere (from): it is not trained here, and its "
                    "rank, alpha and modules come from its adapter_config.json",
                    "score it on held-out rows with evaluation.datasets" if key == "dataset" else None,
                    key=True,
                )


@rule
def imported_adapter_fits(recipe: Recipe) -> Iterator[Problem]:
    """An adapter trained elsewhere is a PEFT LoRA adapter whose matrices fit the recipe's base model."""
    ref = None if model_ref_problems(recipe) else model_ref(recipe)
    config, arch = (model_config(ref), architecture_of(recipe)) if ref else (None, None)
    for name, adapter in recipe.adapters.items():
        source = adapter.get("from")
        if not source:
            continue
        where = ("adapters", name, "from")
        folder = imported_folder(recipe, name)
        if folder is None:
            if not is_hub_id(source):
                local = recipe.resolve_path(where)
                yield recipe.problem(
                    where, f"adapter folder {display_path(local)} does not exist (and it is not a Hugging Face id)"
                )
            continue  # a hub id not fetched yet: checked when the run fetches it
        try:
            imported = read_imported(folder)
        except NotAnAdapter as exc:
            yield recipe.problem(where, str(exc))
            continue
        if config and arch:
            yield from (
                recipe.problem(where, text) for text in fit_problems(imported, config, arch, recipe.data["model"]["id"])
            )


def fit_problems(imported: ImportedAdapter, config: dict, arch: dict, model_id: str) -> list[str]:
    """One message when an imported adapter's matrices do not fit the model (its first three misfits)."""
    found = shape_problems(imported, config, arch)
    if not found:
        return []
    trained_on = f" (it was trained on {imported.base_model})" if imported.base_model not in {None, model_id} else ""
    more = f"; and {len(found) - 3} more" if len(found) > 3 else ""
    return [f"the adapter does not fit {model_id}{trained_on}: {'; '.join(found[:3])}{more}"]


@rule
def target_adapters_exist(recipe: Recipe) -> Iterator[Problem]:
    """Every adapter a target ships is defined under adapters."""
    for name, target in recipe.targets.items():
        for i, adapter in enumerate(target["adapters"] or []):
            if adapter not in recipe.adapters:
                yield recipe.problem(("targets", name, "adapters", i), *_unknown("adapter", adapter, recipe.adapters))


@rule
def target_adapters_share_modules(recipe: Recipe) -> Iterator[Problem]:
    """All adapters in one package train the same modules: they share one base graph."""
    arch = architecture_of(recipe)
    for name in recipe.targets:
        shipped = [a for a in recipe.target_adapters(name) if a in recipe.adapters]
        if not shipped:
            continue
        first = shipped[0]
        expected = adapter_modules(recipe, first, arch)
        for other in shipped[1:]:
            modules = adapter_modules(recipe, other, arch)
            if modules is not None and expected is not None and sorted(modules) != sorted(expected):
                methods = (recipe.adapters[first]["method"], recipe.adapters[other]["method"])
                every_linear = next((m for m in methods if metadata.method(m)["trains_every_linear"]), None)
                why = f" ({every_linear} trains every linear layer)" if every_linear else ""
                yield recipe.problem(
                    ("adapters", other, "from" if recipe.adapters[other].get("from") else "target_modules"),
                    f"target modules {modules} differ from adapter '{first}' ({expected}){why}, and both ship in "
                    f"target '{name}'; adapters in one package share one base graph, so they must train the same modules",
                )


@rule
def target_modules_known(recipe: Recipe) -> Iterator[Problem]:
    """The architecture has a default when none is given, and the modules named exist in it."""
    arch = architecture_of(recipe)
    for name, adapter in recipe.adapters.items():
        modules = adapter["target_modules"]
        if adapter.get("from"):
            continue  # its modules are its own (imported_adapter_fits)
        if modules is None and arch is None and not model_ref_problems(recipe) and _known_facts(recipe) is None:
            yield recipe.problem(
                ("adapters", name),
                "olive-flows has no default target modules for this model's architecture",
                "set target_modules (for example [q_proj, v_proj])",
            )
        for i, module in enumerate((modules or []) if arch else []):
            if module not in arch["lora_modules"]:
                hint = did_you_mean(module, arch["lora_modules"]) or f"choose from {', '.join(arch['lora_modules'])}"
                yield recipe.problem(
                    ("adapters", name, "target_modules", i),
                    f"'{module}' is not a LoRA module of this architecture",
                    hint,
                )


@rule
def method_trains_the_named_modules(recipe: Recipe) -> Iterator[Problem]:
    """target_modules is not silently ignored: QLoRA in Olive 0.13 trains every linear layer."""
    arch = architecture_of(recipe)
    for name, adapter in recipe.adapters.items():
        modules, method = adapter["target_modules"], metadata.method(adapter["method"])
        if not (arch and modules and method["trains_every_linear"]):
            continue
        if sorted(modules) != sorted(arch["lora_modules"]):
            yield recipe.problem(
                ("adapters", name, "target_modules"),
                f"{adapter['method']} trains every linear layer ({', '.join(arch['lora_modules'])}): "
                f"Olive's {method['olive_pass']} pass ignores target_modules, so this list would not be what is trained",
                "remove target_modules, or use method: lora to train only these modules",
            )


@rule
def method_can_be_exported(recipe: Recipe) -> Iterator[Problem]:
    """The method's adapters survive export to onnxruntime-genai unchanged."""
    for name, adapter in recipe.adapters.items():
        blocker = metadata.method(adapter["method"])["export_blocker"]
        if blocker:
            yield recipe.problem(
                ("adapters", name, "method"), f"{adapter['method']} cannot be exported: {blocker}", "use lora"
            )


@rule
def data_files_match_format(recipe: Recipe) -> Iterator[Problem]:
    """Each local data file exists and its first rows are valid rows of the declared (or detected) format."""
    for name, spec in recipe.datasets.items():
        for key in ("path", "eval_path"):
            if key not in spec:
                continue
            path, where = recipe.data_file(name, key), ("datasets", name, key)
            if not path.is_file():
                yield recipe.problem(where, f"data file {display_path(path)} does not exist")
                continue
            try:
                normalize_rows(islice(iter_local(path, spec.get("table")), ROWS_CHECKED_AT_VALIDATION), spec)
            except UserError as exc:
                first = exc.problems[0] if exc.problems else None
                yield recipe.problem(
                    where, f"{first.location}: {first.message}" if first else f"{display_path(path)}: {exc.text}"
                )


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


def _provider(target: dict) -> str | None:
    """The target's provider, or None when it names one of another device (reported on its own)."""
    provider = metadata.provider_of(target["device"], target["provider"])
    return provider if metadata.target_profile(provider)["device"] == target["device"] else None


def _outside_profile(recipe: Recipe, field: str, profile_key: str, name_device: bool) -> Iterator[Problem]:
    """Targets whose ``field`` is not among the values the provider's profile lists under ``profile_key``."""
    for name, target in recipe.targets.items():
        provider = _provider(target)
        allowed = metadata.target_profile(provider)[profile_key] if provider else [target[field]]
        if target[field] not in allowed:
            device = f" (device {target['device']})" if name_device else ""
            yield recipe.problem(
                ("targets", name, field),
                f"{target[field]} is not available for {provider}{device}",
                f"choose one of {', '.join(allowed)}",
            )


@rule
def precision_supported_by_target(recipe: Recipe) -> Iterator[Problem]:
    """The precision is one ModelBuilder produces for this provider (Olive would prune it silently)."""
    yield from _outside_profile(recipe, "precision", "precisions", name_device=True)


@rule
def adapter_weights_supported_by_target(recipe: Recipe) -> Iterator[Problem]:
    """The adapter weight storage is one olive-flows has checked on this provider's runtime."""
    yield from _outside_profile(recipe, "adapter_weights", "adapter_weights", name_device=False)


@rule
def target_has_export_path(recipe: Recipe) -> Iterator[Problem]:
    """olive-flows has a pass chain for the target's provider."""
    for name, target in recipe.targets.items():
        provider = _provider(target)
        profile = metadata.target_profile(provider) if provider else None
        if profile and profile["export"] is None:
            yield recipe.problem(
                ("targets", name, "provider" if target["provider"] else "device"),
                f"olive-flows cannot export for {provider} yet: {profile['export_blocker']}",
                "export for cpu, gpu (CUDA or WebGPU) or dml instead",
            )


@rule
def adapters_loadable_at_runtime(recipe: Recipe) -> Iterator[Problem]:
    """Warn when the target's runtime cannot switch adapters (DirectML today)."""
    for name, target in recipe.targets.items():
        provider = _provider(target)
        profile = metadata.target_profile(provider) if provider else {"adapters_at_runtime": True}
        if not profile["adapters_at_runtime"] and profile["export"]:
            yield recipe.warning(("targets", name, "device"), profile["adapter_limitation"])


@rule
def int4_options_need_int4(recipe: Recipe) -> Iterator[Problem]:
    """int4 options on a target of another precision would be ignored silently."""
    for name, target in recipe.raw.get("targets", {}).items():
        precision = recipe.targets[name]["precision"]
        if isinstance(target, dict) and "int4" in target and precision != "int4":
            yield recipe.problem(("targets", name, "int4"), f"int4 options have no effect with precision {precision}")


@rule
def int4_keeps_the_models_grid(recipe: Recipe) -> Iterator[Problem]:
    """A built-in model dequantized from a GGUF is exact on that format's grid; another int4 algorithm
    rounds its weights a second time."""
    model_id = recipe.data["model"]["id"]
    builtin = (
        metadata.builtin_model(model_id.removeprefix(BUILTIN_PREFIX)) if model_id.startswith(BUILTIN_PREFIX) else None
    )
    grid = (builtin or {}).get("weights_grid")
    for name, target in recipe.targets.items():
        if grid and target["precision"] == "int4" and target["int4"]["algorithm"] != grid:
            yield recipe.warning(
                ("targets", name, "precision"),
                f"{model_id} was dequantized from {grid} blocks; int4 algorithm {target['int4']['algorithm']} "
                f"rounds its weights a second time and loses accuracy; set targets.{name}.int4.algorithm: {grid} "
                "to keep them exact",
            )


def _text_format(recipe: Recipe, name: str) -> str | None:
    """How dataset ``name`` is known to be plain text ("format: text", or where its format was detected),
    or None when it is not, or cannot be told at validation (a Hugging Face dataset, a missing or
    unreadable file)."""
    spec = recipe.datasets[name]
    if spec.get("template") or spec.get("format") or "path" not in spec:
        return "format: text" if not spec.get("template") and spec.get("format") == "text" else None
    path = recipe.data_file(name)
    if not path.is_file():
        return None  # reported by data_files_match_format
    try:
        rows = islice(iter_local(path, spec.get("table")), ROWS_CHECKED_AT_VALIDATION)
        first = next((row for _, row in rows if not isinstance(row, BadRecord)), None)
    except (UserError, OSError, ValueError):
        return None
    fmt, _ = declared_format(spec, first)
    return f"format text detected from the first row of {display_path(path)}" if fmt == "text" else None


@rule
def evaluation_metrics_name_datasets(recipe: Recipe) -> Iterator[Problem]:
    """Task metrics are declared for datasets that exist, and that have answers to compare with:
    not text datasets (declared or detected), nor mixes with a text dataset among their parts."""
    need = "task metrics need prompt and answer rows"
    for dataset in recipe.data["evaluation"]["metrics"]:
        where = ("evaluation", "metrics", dataset)
        if dataset not in recipe.datasets:
            yield recipe.problem(where, *_unknown("dataset", dataset, recipe.datasets), key=True)
            continue
        parts = recipe.datasets[dataset].get("mix")
        if parts is None:
            why = _text_format(recipe, dataset)
            if why:
                shown = "" if recipe.datasets[dataset]["format"] else f" ({why})"
                yield recipe.problem(where, f"{need}; a text dataset has none{shown}", key=True)
            continue
        for part in parts:
            if part in recipe.datasets and "mix" not in recipe.datasets[part]:
                why = _text_format(recipe, part)
                if why:
                    yield recipe.problem(where, f"{need}; mix part '{part}' is a text dataset ({why})", key=True)


@rule
def evaluation_datasets_name_imported_adapters(recipe: Recipe) -> Iterator[Problem]:
    """evaluation.datasets scores adapters trained elsewhere, on datasets that exist."""
    for adapter, dataset in recipe.data["evaluation"]["datasets"].items():
        where = ("evaluation", "datasets", adapter)
        if adapter not in recipe.adapters:
            yield recipe.problem(where, *_unknown("adapter", adapter, recipe.adapters), key=True)
        elif not recipe.adapters[adapter].get("from"):
            yield recipe.problem(
                where, "this adapter is trained here and scored on its own dataset's held-out rows", key=True
            )
        elif dataset not in recipe.datasets:
            yield recipe.problem(where, *_unknown("dataset", dataset, recipe.datasets))


@rule
def promotion_metrics_are_measured(recipe: Recipe) -> Iterator[Problem]:
    """promote.when: better judges on metrics every run measures: <adapter>/<task metric of its
    dataset> or <adapter>/perplexity, for an adapter of the recipe."""
    promote = recipe.data["promote"]
    if promote["when"] == "better" and not promote["metrics"]:
        yield recipe.problem(("promote", "metrics"), "promote.when: better needs the metrics to judge by")
    for index, name in enumerate(promote["metrics"]):
        adapter, _, metric = name.partition("/")
        dataset = recipe.spec.dataset_of(adapter) if adapter in recipe.adapters else None
        measured = ["perplexity", *recipe.data["evaluation"]["metrics"].get(dataset, [])] if dataset else []
        if adapter not in recipe.adapters:
            yield recipe.problem(("promote", "metrics", index), *_unknown("adapter", adapter, recipe.adapters))
        elif metric not in measured:
            hint = did_you_mean(metric, measured) or f"its metrics: {', '.join(measured)}"
            yield recipe.problem(("promote", "metrics", index), f"{adapter} is not scored on '{metric}'", hint)


@rule
def sweep_objective_is_measured(recipe: Recipe) -> Iterator[Problem]:
    """sweep.objective.metric is eval_loss or a metric every run measures (as for promote.metrics);
    a grid sweep lists choices for each field, and not too many combinations."""
    sweep = recipe.data.get("sweep")
    if not sweep:
        return
    name = sweep["objective"]["metric"]
    adapter, _, metric = name.partition("/")
    dataset = recipe.spec.dataset_of(adapter) if adapter in recipe.adapters else None
    measured = ["perplexity", *recipe.data["evaluation"]["metrics"].get(dataset, [])] if dataset else []
    if name != "eval_loss" and adapter not in recipe.adapters:
        hint = "eval_loss, or <adapter>/<metric> for an adapter of the recipe"
        yield recipe.problem(("sweep", "objective", "metric"), f"'{name}' is not measured by a run", hint)
    elif name != "eval_loss" and metric not in measured:
        hint = did_you_mean(metric, measured) or f"its metrics: {', '.join(measured)}"
        yield recipe.problem(("sweep", "objective", "metric"), f"{adapter} is not scored on '{metric}'", hint)
    if sweep["sampler"] != "grid":
        return
    combinations = 1
    for path, values in sweep.get("parameters", {}).items():
        if "choices" not in values:
            yield recipe.problem(("sweep", "parameters", path), "a grid sweep needs choices, not a range")
        combinations *= len(values.get("choices", [None]))
    if combinations > GRID_LIMIT:
        yield recipe.problem(
            ("sweep", "sampler"),
            f"the grid has {combinations} combinations, more than {GRID_LIMIT}",
            "fewer choices, or sampler: tpe",
        )


@rule
def remote_code_is_announced(recipe: Recipe) -> Iterator[Problem]:
    """trust_remote_code runs Python code shipped with the model; say so every time it is on."""
    if recipe.data["model"]["trust_remote_code"]:
        yield recipe.warning(
            ("model", "trust_remote_code"),
            f"the Python code shipped with {recipe.data['model']['id']} will run on this machine (trust_remote_code)",
        )


def _held_out_gap(recipe: Recipe, dataset: str) -> str | None:
    """Why dataset ``dataset`` (not a mix) holds out no rows, or None when it does (or cannot be told)."""
    spec = recipe.datasets[dataset]
    if "eval_path" in spec:
        path = recipe.data_file(dataset, "eval_path")
        if not path.is_file():
            return None  # reported by data_files_match_format
        try:
            if next(islice(iter_local(path, spec.get("table")), 1), None) is None:
                return f"datasets.{dataset}.eval_path ({display_path(path)}) has no rows"
        except (UserError, OSError, ValueError):
            return None
        return None
    if not spec.get("eval_split"):
        return f"datasets.{dataset}.eval_split is {spec.get('eval_split', 0)}: no rows are held out"
    return None


def _best_checkpoint_field(training: dict) -> str | None:
    """The training field that makes it end on its best checkpoint, or None."""
    if training.get("early_stopping") is not None:
        return "early_stopping"
    return "load_best" if training.get("load_best") else None


@rule
def best_checkpoint_needs_held_out_rows(recipe: Recipe) -> Iterator[Problem]:
    """early_stopping and load_best compare held-out losses (eval_loss), so the adapter's dataset holds
    rows out (a mix pools the held-out rows of its parts: one part with some is enough)."""
    for name, adapter in recipe.adapters.items():
        field = _best_checkpoint_field(adapter.get("training") or {})
        dataset = adapter.get("dataset")
        if not field or dataset not in recipe.datasets:
            continue
        parts = [p for p in recipe.datasets[dataset].get("mix") or [dataset] if p in recipe.datasets]
        gaps = [_held_out_gap(recipe, part) for part in parts if "mix" not in recipe.datasets[part]]
        if gaps and all(gaps):
            yield recipe.problem(
                ("adapters", name, "training", field),
                f"{field} compares held-out losses (eval_loss), and {gaps[0]}",
                f"give datasets.{dataset} held-out rows: eval_split (for example 0.1) or eval_path",
            )


@rule
def bf16_needs_a_float32_or_bfloat16_model(recipe: Recipe) -> Iterator[Problem]:
    """A model loaded in float16 trains in fp16 mixed precision (Olive's LoRA passes), and
    transformers takes one of fp16 and bf16, not both."""
    if (recipe.data.get("model") or {}).get("dtype") != "float16":
        return
    for name, adapter in recipe.adapters.items():
        if (adapter.get("training") or {}).get("mixed_precision") == "bf16":
            yield recipe.problem(
                ("adapters", name, "training", "mixed_precision"),
                "mixed_precision bf16 does not go with model.dtype float16, which Olive trains in fp16 mixed precision",
                "set model.dtype to float32 (or bfloat16), or leave mixed_precision at auto",
            )


ROWS_COUNTED_FOR_STEPS = 10_000  # enough rows that a training with epochs evaluates often enough


def _estimated_steps(recipe: Recipe, dataset: str, training: dict) -> int | None:
    """The optimizer steps of a training with epochs, from the rows of a local file (counted up to
    ROWS_COUNTED_FOR_STEPS: then a lower bound), or None when they cannot be counted at validation."""
    spec = recipe.datasets.get(dataset) or {}
    if "path" not in spec or "mix" in spec or not recipe.data_file(dataset).is_file():
        return None
    try:
        rows = sum(1 for _ in islice(iter_local(recipe.data_file(dataset), spec.get("table")), ROWS_COUNTED_FOR_STEPS))
    except (UserError, OSError, ValueError):
        return None
    held_out = 0 if "eval_path" in spec else math.ceil(rows * spec["eval_split"])
    train_rows = rows - held_out - (math.ceil(rows * spec["test_split"]) if spec["test_split"] else 0)
    if spec.get("max_samples"):
        train_rows = min(train_rows, spec["max_samples"])
    batches = math.ceil(max(train_rows, 1) / training["batch_size"])
    return max(1, math.ceil(batches / training["grad_accum"] * training["epochs"]))


@rule
def early_stopping_can_stop(recipe: Recipe) -> Iterator[Problem]:
    """Early stopping stops after a first evaluation to beat and then ``patience`` without improvement:
    a training that evaluates fewer times than patience + 1 always runs to the end."""

    for name, adapter in recipe.adapters.items():
        training = adapter.get("training") or {}
        stopping = training.get("early_stopping")
        if stopping is None:
            continue
        steps = training.get("max_steps") or _estimated_steps(recipe, adapter.get("dataset"), training)
        if not steps:
            continue
        eval_steps = training.get("eval_every") or max(1, steps // EVALS_PER_TRAINING)
        evaluations, needed = steps // eval_steps, stopping["patience"] + 1
        if evaluations < needed:
            how = (
                f"{steps} steps"
                if training.get("max_steps")
                else f"about {steps} steps ({training['epochs']:g} epochs)"
            )
            yield recipe.warning(
                ("adapters", name, "training", "early_stopping"),
                f"early stopping can never stop this training: it evaluates the held-out loss {evaluations} "
                f"time(s) (every {eval_steps} of {how}), and stopping takes patience + 1 = {needed} evaluations "
                f"(a first one to beat, then {stopping['patience']} without improvement)",
                "set a smaller eval_every, or train for more steps",
            )


@rule
def checkpoints_fall_on_evaluations(recipe: Recipe) -> Iterator[Problem]:
    """Ending on the best checkpoint needs a checkpoint at an evaluation: checkpoint_every is rounded up
    to a multiple of eval_every (compile/workflow.py); say so when that changes the value set."""
    for name, adapter in recipe.adapters.items():
        training = adapter.get("training") or {}
        every, evals = training.get("checkpoint_every"), training.get("eval_every")
        if _best_checkpoint_field(training) and every and evals and every % evals:
            yield recipe.warning(
                ("adapters", name, "training", "checkpoint_every"),
                f"checkpoints are saved every {math.ceil(every / evals) * evals} steps, not {every}: with "
                f"{_best_checkpoint_field(training)} each checkpoint must fall on an evaluation (eval_every {evals})",
            )


@rule
def distributed_settings_fit(recipe: Recipe) -> Iterator[Problem]:
    """training.distributed: a config file replaces strategy, zero_stage and offload, and must be one
    olive-flows can read; zero_stage is DeepSpeed's; offload needs a sharding strategy; the strategy can
    train the adapter's method."""
    for name, adapter in recipe.adapters.items():
        if "dataset" not in adapter:
            continue
        written = ((recipe.raw.get("adapters") or {}).get(name) or {}).get("training") or {}
        written = written.get("distributed") or {}
        where = ("adapters", name, "training", "distributed")
        for key in ("strategy", "zero_stage", "offload"):
            if "config" in written and key in written:
                yield recipe.problem((*where, key), f"{key} has no effect beside config, which says how to train")
        try:
            chosen = strategy(recipe, name)
        except DistributedConfigError as exc:
            yield recipe.problem((*where, "config"), str(exc))
            continue
        if "config" not in written:
            if "zero_stage" in written and chosen.name != "deepspeed":
                yield recipe.problem(
                    (*where, "zero_stage"), f"zero_stage is a DeepSpeed setting, and strategy is {chosen.name}"
                )
            if written.get("offload") == "cpu" and not chosen.shards:
                yield recipe.problem(
                    (*where, "offload"),
                    "ddp keeps a whole model on every device: there is nothing to offload",
                    "use strategy: fsdp or deepspeed to offload sharded state to CPU memory",
                )
        reason = chosen.cannot_train(adapter["method"])
        if reason:
            field = "config" if "config" in written else "strategy"
            yield recipe.problem(
                (*where, field), f"{chosen.name} cannot train {adapter['method']}: {reason}", "use strategy: ddp"
            )
