"""What ``training.distributed`` asks of the transformers Trainer when a run has several processes.

The recipe names a strategy (ddp, fsdp, deepspeed, with zero_stage and offload), or a config file
written for the tools people already use: a DeepSpeed JSON, or an accelerate YAML as ``accelerate
config`` writes it. Both become Trainer arguments, which Olive's LoRA pass hands to the Trainer;
the DeepSpeed config is inlined, so a changed file is a changed training (and not a cache hit).
metadata/distributed.json holds what each strategy adds.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from olive_flows import metadata
from olive_flows.recipe.model import Recipe


class DistributedConfigError(ValueError):
    """A distributed config file olive-flows cannot read or use; the message says why."""


@dataclass(frozen=True)
class Strategy:
    """How an adapter trains across processes, whether written in the recipe or read from a file."""

    name: str
    zero_stage: int
    offload: str
    deepspeed: dict[str, Any] | None = None  # a DeepSpeed config file's content
    fsdp_config: dict[str, Any] = field(default_factory=dict)  # from an accelerate config

    @property
    def facts(self) -> dict[str, Any]:
        return metadata.load("distributed")["strategies"][self.name]

    @property
    def shards(self) -> bool:
        return self.facts["shards"]

    def cannot_train(self, method: str) -> str | None:
        """Why this strategy cannot train ``method``, or None."""
        blocked = self.facts["cannot_train"]
        if self.name == "deepspeed":
            blocked = blocked.get(str(self.zero_stage), {})
        return blocked.get(method) or blocked.get("*")


def strategy(recipe: Recipe, adapter: str) -> Strategy:
    """The adapter's strategy: from its config file when it names one (DistributedConfigError if that
    file cannot be used), else from strategy, zero_stage and offload."""
    settings = recipe.adapters[adapter]["training"]["distributed"]
    if "config" not in settings:
        return Strategy(settings["strategy"], settings["zero_stage"], settings["offload"])
    return read_config(recipe.resolve_path(("adapters", adapter, "training", "distributed", "config")))


def read_config(path: Path) -> Strategy:
    """A DeepSpeed config (.json) or an accelerate config (.yaml, .yml) as a Strategy."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # Windows editors may start it with a BOM
    except OSError as exc:
        raise DistributedConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.suffix == ".json":
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DistributedConfigError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(config, dict) or not isinstance(config.get("zero_optimization"), dict):
            raise DistributedConfigError(f"{path} has no zero_optimization section: it is not a DeepSpeed config")
        zero = config["zero_optimization"]
        offload = "cpu" if (zero.get("offload_optimizer") or {}).get("device") == "cpu" else "none"
        return Strategy("deepspeed", int(zero.get("stage", 0)), offload, deepspeed=config)
    if path.suffix in {".yaml", ".yml"}:
        return _accelerate_config(path, text)
    raise DistributedConfigError(
        f"{path}: a distributed config is a DeepSpeed config (.json) or an accelerate config (.yaml)"
    )


def _accelerate_config(path: Path, text: str) -> Strategy:
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DistributedConfigError(f"{path} is not valid YAML: {exc}") from None
    kinds = metadata.load("distributed")["accelerate_types"]
    kind = config.get("distributed_type") if isinstance(config, dict) else None
    if kind not in kinds:
        raise DistributedConfigError(
            f"{path}: distributed_type is {kind!r}; olive-flows reads accelerate configs of type {', '.join(kinds)}"
        )
    name = kinds[kind]
    if name == "fsdp":
        fsdp = {k.removeprefix("fsdp_"): v for k, v in (config.get("fsdp_config") or {}).items()}
        offload = "cpu" if fsdp.pop("offload_params", False) else "none"
        return Strategy(name, 2, offload, fsdp_config=fsdp)
    if name == "deepspeed":
        ds = config.get("deepspeed_config") or {}
        if "deepspeed_config_file" in ds:
            return read_config((path.parent / ds["deepspeed_config_file"]).resolve())
        offload = "cpu" if ds.get("offload_optimizer_device") == "cpu" else "none"
        return Strategy(name, int(ds.get("zero_stage", 2)), offload)
    return Strategy(name, 2, "none")


def trainer_arguments(recipe: Recipe, adapter: str, processes: int) -> dict[str, Any]:
    """The Trainer arguments that make the adapter's training run across ``processes`` processes
    (none for one process: data parallelism and sharding need company)."""
    if processes == 1:
        return {}
    chosen = strategy(recipe, adapter)
    facts = chosen.facts
    args = copy.deepcopy(facts["trainer_args"])
    if chosen.offload == "cpu" and facts["offload_args"]:
        args.update(facts["offload_args"])
    if chosen.fsdp_config:
        args["fsdp_config"] = {**args.get("fsdp_config", {}), **chosen.fsdp_config}
    if chosen.name == "deepspeed":
        args["deepspeed"] = chosen.deepspeed or deepspeed_config(chosen.zero_stage, chosen.offload)
    return args


def deepspeed_config(stage: int, offload: str) -> dict[str, Any]:
    """A DeepSpeed config for ZeRO ``stage``, with optimizer state (and at stage 3, weights) in CPU
    memory when ``offload`` is cpu."""
    config = copy.deepcopy(metadata.load("distributed")["deepspeed_config"])
    zero = config["zero_optimization"]
    zero["stage"] = stage
    if offload == "cpu":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return config
