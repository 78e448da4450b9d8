"""Compile a recipe into Olive workflow configs: one per (target, adapter).

Each workflow is train (LoRA pass) -> ModelBuilder for the target [-> quantization, for precisions
ModelBuilder cannot produce] -> ExtractAdapters. Olive caches
every pass by its config and input, so the training pass of an adapter runs once even when several
targets export it, and an unchanged re-run only copies cached results.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from packaging import version

from olive_flows import metadata
from olive_flows.data.prepare import PreparedDataset
from olive_flows.layout import Workspace
from olive_flows.models.architecture import trained_modules
from olive_flows.models.imported import ImportedAdapter
from olive_flows.models.resolve import ModelRef
from olive_flows.plugins import TOKENIZE_COMPONENT, build_pass, component_file
from olive_flows.problems import UserError
from olive_flows.recipe.distributed import trainer_arguments
from olive_flows.recipe.model import Recipe
from olive_flows.recipe.views import (
    CHECKPOINTS_PER_TRAINING,
    EVALS_PER_TRAINING,
    Adapter,
    Clean,
    Spec,
    Target,
    Training,
)

TRAIN, BUILD, QUANTIZE, EXTRACT = "train", "build", "quantize", "extract"
TRAIN_DATA, EVAL_DATA = "train_rows", "eval_rows"  # Olive allows only letters, digits and '_' here


@dataclass(frozen=True)
class Job:
    """One Olive workflow: an adapter trained and exported for one target."""

    target: str
    adapter: str
    config: dict[str, Any]
    imported: ImportedAdapter | None = None  # an adapter trained elsewhere: exported, not trained

    @property
    def name(self) -> str:
        return f"{self.target}/{self.adapter}"

    @property
    def stats_path(self) -> str | None:
        """Where the training data's tokenization reports what it did (see plugins/tokenize_component.py);
        None for an adapter trained elsewhere."""
        configs = self.config["data_configs"]
        return configs[0]["pre_process_data_config"]["params"]["stats_path"] if configs else None

    def to_json(self) -> str:
        """The config as JSON, as `olive-flows compile` writes it. Keys keep their order: Olive runs
        the passes in the order they are listed, so sorting them would reorder the workflow."""
        return json.dumps(self.config, indent=2) + "\n"


def lora_node_names(modules: list[str], num_layers: int) -> list[str]:
    """ModelBuilder's names for the LoRA MatMuls of ``modules``, to keep them out of int4/int8.

    Quantizing them breaks the base model with no adapter active and freezes the rank, so they stay
    float. Names that a graph does not contain are harmless to list.
    """
    paths = metadata.load("architectures")["onnx_lora_paths"]
    sub_paths = sorted({p for module in modules for p in paths.get(module, [])})
    return [
        f"/model/layers.{layer}/{sub}/{half}/MatMul"
        for layer in range(num_layers)
        for sub in sub_paths
        for half in ("lora_A", "lora_B")
    ]


def total_steps(training: Training, train_rows: int, processes: int = 1) -> int:
    """Optimizer steps the training will take (max_steps, else epochs over the rows, of which each
    step takes batch_size x grad_accum per process)."""
    if training.max_steps:
        return training.max_steps
    batches = math.ceil(train_rows / (training.batch_size * processes))
    return max(1, math.ceil(batches / training.grad_accum * training.epochs))


def intervals(training: Training, steps: int) -> tuple[int, int]:
    """(eval_steps, save_steps): eval_every and checkpoint_every, else EVALS_PER_TRAINING evaluations and
    CHECKPOINTS_PER_TRAINING checkpoints over ``steps``. transformers refuses load_best_model_at_end
    (load_best, early_stopping) unless save_steps is a multiple of eval_steps: the best checkpoint must
    be one saved at an evaluation. Then save_steps is rounded up to the next multiple of eval_steps."""
    eval_steps = training.eval_every or max(1, steps // EVALS_PER_TRAINING)
    save_steps = training.checkpoint_every or max(1, steps // CHECKPOINTS_PER_TRAINING)
    if training.keeps_best:
        save_steps = math.ceil(save_steps / eval_steps) * eval_steps
    return eval_steps, save_steps


def _data_config(name: str, rows: Path, tokenization: dict[str, Any]) -> dict[str, Any]:
    """An Olive data config that loads normalized rows and tokenizes them with olive-flows' component."""
    return {
        "name": name,
        "type": "HuggingfaceContainer",
        "user_script": str(component_file(TOKENIZE_COMPONENT)),
        "load_dataset_config": {"data_name": "json", "data_files": str(rows), "split": "train"},
        "pre_process_data_config": {"type": TOKENIZE_COMPONENT, "params": tokenization},
    }


def tokenization(adapter: Adapter, data: PreparedDataset, clean: Clean) -> dict[str, Any]:
    """How the adapter's rows become examples; the stats file is named by these settings."""
    settings = {
        "max_seq_len": adapter.training.max_seq_len,
        "loss_on": adapter.training.loss_on if data.kind == "chat" else "all",
        "min_tokens": clean.min_tokens,
        "max_tokens": clean.max_tokens,
    }
    digest = hashlib.sha256(json.dumps([adapter.name, settings], sort_keys=True).encode()).hexdigest()[:8]
    return {**settings, "stats_path": str(data.train_file.parent / f"stats-{adapter.name}-{digest}.json")}


def _train_pass(
    spec: Spec,
    adapter: Adapter,
    data: PreparedDataset,
    arch: dict | None,
    checkpoints: Path,
    distributed: tuple[int, dict[str, Any]] = (1, {}),
) -> tuple[dict, list[dict]]:
    """The training pass; ``distributed``: the processes training together and the Trainer arguments
    that spread the training over them (recipe/distributed.py)."""
    training = adapter.training
    processes, distributed_args = distributed
    steps = total_steps(training, data.train_rows, processes)
    eval_steps, save_steps = intervals(training, steps)
    length = {"max_steps": training.max_steps} if training.max_steps else {"num_train_epochs": training.epochs}
    train_tokens = tokenization(adapter, data, spec.datasets[data.name].clean)
    eval_tokens = {**train_tokens, "stats_path": train_tokens["stats_path"].replace("/stats-", "/eval-stats-")}
    data_configs = [
        _data_config(TRAIN_DATA, data.train_file, train_tokens),
        _data_config(EVAL_DATA, data.eval_file, eval_tokens),
    ]
    train = {
        "type": metadata.method(adapter.method)["pass"],
        "r": adapter.r,
        "alpha": adapter.alpha,
        "lora_dropout": adapter.dropout,
        "target_modules": trained_modules(adapter.method, adapter.target_modules, arch),
        "torch_dtype": spec.model.dtype,
        "mixed_precision": training.mixed_precision,  # resolved on the training machine (plugins/train_pass.py)
        "train_data_config": TRAIN_DATA,
        "eval_data_config": EVAL_DATA,
        "training_args": {
            **length,
            "learning_rate": training.learning_rate,
            "per_device_train_batch_size": training.batch_size,
            "per_device_eval_batch_size": training.batch_size,
            "gradient_accumulation_steps": training.grad_accum,
            # transformers 5 has no warmup_ratio (Olive would drop it): the same warm-up, in steps
            "warmup_steps": math.ceil(training.warmup_ratio * steps),
            "lr_scheduler_type": training.lr_scheduler,
            "weight_decay": training.weight_decay,
            "seed": training.seed,
            "data_seed": training.seed,
            "gradient_checkpointing": training.gradient_checkpointing,
            "eval_strategy": "steps",
            "eval_steps": eval_steps,
            "logging_steps": 1,
            # transformers 5 replaced group_by_length with this (Olive drops unknown arguments with a warning)
            "train_sampling_strategy": "group_by_length" if training.group_by_length else "random",
            "report_to": list(training.report_to) or "none",
            "disable_tqdm": True,
            **distributed_args,
        },
    }
    if training.packing:  # read by plugins/train_pass.py, which packs each batch's rows when told to
        train["packing"] = True
    if processes > 1:  # a different training: more rows per step, so its own checkpoints and cache entry
        train["world_size"] = processes
    if training.keeps_best:  # end on the checkpoint with the lowest held-out loss
        train["training_args"].update(
            load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False
        )
    if training.early_stopping:  # read by plugins/train_pass.py, which adds transformers' EarlyStoppingCallback
        train["early_stopping_patience"] = training.early_stopping.patience
        train["early_stopping_threshold"] = training.early_stopping.min_delta
    # Olive's LoRA pass resumes from the last checkpoint in training_args.output_dir. The folder is
    # named by the rest of the pass config, so only an identical training ever resumes from it.
    identity = [train, asdict(spec.model), data.train_file.parent.name]
    identity.append({k: v for k, v in train_tokens.items() if k != "stats_path"})
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    train["training_args"].update(
        save_strategy="steps",
        save_steps=save_steps,  # a multiple of eval_steps when training ends on its best checkpoint
        save_total_limit=1,
        output_dir=str(checkpoints / f"{adapter.name}-{digest}"),
    )
    return train, data_configs


GENAI_DISTRIBUTIONS = ("onnxruntime-genai", "onnxruntime-genai-cuda", "onnxruntime-genai-directml")  # one builder


def builder_version() -> str | None:
    """The installed onnxruntime-genai's version (its builder's), from package metadata: importing
    onnxruntime_genai loads its native library. None when no build of it is installed."""
    for name in GENAI_DISTRIBUTIONS:
        with contextlib.suppress(importlib_metadata.PackageNotFoundError):
            return importlib_metadata.version(name)
    return None


def _builder_builds(chain: dict[str, Any]) -> bool:
    """Whether the installed builder is new enough to build the chain's precision itself ('builder_from')."""
    found, since = builder_version(), chain.get("builder_from")
    return bool(found and since) and version.Version(found).release >= version.Version(since).release


def _export_passes(target: Target, modules: list[str], num_layers: int) -> dict[str, dict[str, Any]]:
    """ModelBuilder at the target's precision, or at a build precision followed by a quantization pass
    for what ModelBuilder cannot produce (metadata/targets.json: precision_passes for a precision,
    int4_algorithm_passes for an int4 algorithm), unless the installed builder produces it itself
    ('builder_from', with 'builder_options'). LoRA MatMuls stay out of every quantization."""
    targets = metadata.load("targets")
    options = target.int4
    if target.precision == "int4":
        chain = targets["int4_algorithm_passes"].get(options.algorithm)
    else:
        chain = targets["precision_passes"].get(target.precision)
    lora_nodes = lora_node_names(modules, num_layers)
    if chain and _builder_builds(chain):
        own = {"type": build_pass(), "precision": target.precision, **chain["builder_options"]}
        return {BUILD: {**own, "int4_nodes_to_exclude": lora_nodes}}
    precision = chain["build_precision"] if chain else target.precision
    build: dict[str, Any] = {"type": build_pass(), "precision": precision}
    if precision == "int4":
        build.update(
            int4_block_size=options.block_size,
            int4_accuracy_level=options.accuracy_level,
            int4_is_symmetric=options.symmetric,
            int4_algo_config=options.algorithm,
            int4_nodes_to_exclude=lora_nodes,
        )
    passes = {BUILD: build}
    if chain:
        quantize = {**chain["quantize"], "nodes_to_exclude": [*chain.get("keep_float", []), *lora_nodes]}
        if target.precision == "int4":
            quantize.update(block_size=options.block_size, accuracy_level=options.accuracy_level)
        passes[QUANTIZE] = quantize
    return passes


def _extract_pass(target: Target) -> dict[str, Any]:
    """ExtractAdapters, saving the weights in the format metadata/targets.json gives the precision
    where Olive's default (.onnx_adapter) fails; package/assemble.py converts them."""
    save_format = metadata.load("targets")["adapter_weights_format"].get(target.precision)
    return {"type": "ExtractAdapters", **({"save_format": save_format} if save_format else {})}


def _system(device: str, provider: str) -> dict[str, Any]:
    return {"type": "LocalSystem", "accelerators": [{"device": device, "execution_providers": [provider]}]}


def _check_held_out(recipe: Recipe, adapter: Adapter, data: PreparedDataset) -> None:
    """early_stopping and load_best compare held-out losses: refuse a dataset without held-out rows
    (an eval_path file left empty by cleaning), where transformers would fail mid-run instead."""
    if not adapter.training.keeps_best or data.eval_rows:
        return
    field = "early_stopping" if adapter.training.early_stopping else "load_best"
    raise UserError(
        [
            recipe.problem(
                ("adapters", adapter.name, "training", field),
                f"{field} compares held-out losses, and dataset {data.name} has no held-out rows",
                f"give datasets.{data.name} held-out rows (eval_split or eval_path)",
            )
        ]
    )


def compile_recipe(
    recipe: Recipe,
    model: ModelRef,
    facts: dict[str, Any],
    datasets: dict[str, PreparedDataset],
    workspace: Workspace,
    imported: dict[str, ImportedAdapter] | None = None,
    processes: int = 1,
) -> list[Job]:
    """Every Olive workflow the recipe needs, in target order then adapter order. An adapter trained
    elsewhere (``imported``, by name) is exported from its PEFT folder: the same passes without training.
    ``processes``: how many processes train each adapter together (data parallel)."""
    imported = imported or {}
    jobs = []
    arch = metadata.architecture(facts["model_type"])
    input_model: dict[str, Any] = {"type": "HfModel", "model_path": model.path}
    load_kwargs = {"trust_remote_code": model.trust_remote_code}
    if model.revision and not Path(model.path).is_absolute():  # a snapshot folder is already at its commit
        load_kwargs["revision"] = model.revision
    input_model["load_kwargs"] = load_kwargs
    spec = recipe.spec
    for target in spec.targets.values():
        for name in recipe.target_adapters(target.name):
            adapter = spec.adapters[name]
            if name in imported:
                train, data_configs, modules = None, [], imported[name].modules
                job_input = {**input_model, "adapter_path": str(imported[name].folder)}
            else:
                _check_held_out(recipe, adapter, datasets[adapter.dataset])
                distributed = (processes, trainer_arguments(recipe, name, processes))
                train, data_configs = _train_pass(
                    spec, adapter, datasets[adapter.dataset], arch, workspace.work / "checkpoints", distributed
                )
                modules, job_input = train["target_modules"], input_model
            config = {
                "workflow_id": recipe.name,
                "input_model": job_input,
                "systems": {
                    "host": _system("cpu", "CPUExecutionProvider"),
                    "target": _system(target.profile["olive_device"], target.execution_provider),
                },
                "host": "host",
                "target": "target",
                "data_configs": data_configs,
                "passes": {
                    **({TRAIN: train} if train else {}),
                    **_export_passes(target, modules, facts["num_hidden_layers"]),
                    EXTRACT: _extract_pass(target),
                },
                "evaluate_input_model": False,
                "cache_dir": str(workspace.olive_cache),
                "output_dir": str(workspace.job(target.name, name)),
                "log_severity_level": 1,
            }
            jobs.append(Job(target.name, name, config, imported.get(name)))
    return jobs
