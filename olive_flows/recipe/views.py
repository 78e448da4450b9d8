"""Typed, read-only views of a resolved recipe, for the steps after validation.

The recipe stays a dict for validation (rules must survive a recipe that broke the schema). Once it
is valid and its defaults are filled in, compile, run, package and evaluate read these views
instead: ``recipe.spec.adapters["dates"].training.max_seq_len``, which an editor completes and a type
checker checks. Each view has exactly the fields of its schema object, so a view built from a dict
with a key it does not know, or a schema field it lacks, fails when the recipe is loaded
(``tests/test_views.py`` holds every view against the schema).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from olive_flows import metadata

KEYWORDS = {"from": "from_"}  # recipe fields that are Python keywords, and their view attribute


def _build(cls: type, data: dict[str, Any], **nested: Any) -> Any:
    """``cls`` from ``data``, with ``nested`` (already built views) replacing their dicts and lists
    turned into tuples. Raises TypeError for a key the view does not have."""
    values = {KEYWORDS.get(k, k): tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**{**values, **nested})


@dataclass(frozen=True)
class Model:
    id: str
    revision: str | None
    trust_remote_code: bool
    dtype: str


@dataclass(frozen=True)
class Clean:
    normalize_whitespace: bool
    dedupe: str | None
    near_threshold: float
    scrub: tuple[str, ...]
    min_tokens: int | None
    max_tokens: int | None


@dataclass(frozen=True)
class Dataset:
    name: str
    format: str | None
    on_error: str
    clean: Clean
    eval_split: float
    test_split: float
    max_samples: int | None
    seed: int
    path: str | None = None
    table: str | None = None
    hf: str | None = None
    split: str | None = None
    revision: str | None = None
    mix: dict[str, float] | None = None
    template: dict[str, str] | None = None
    rating: dict[str, Any] | None = None
    eval_path: str | None = None


@dataclass(frozen=True)
class EarlyStopping:
    patience: int
    min_delta: float


@dataclass(frozen=True)
class Distributed:
    strategy: str
    zero_stage: int
    offload: str
    config: str | None = None  # as written: relative to the recipe file (Recipe.resolve_path)


EVALS_PER_TRAINING = 4  # held-out loss is measured this many times during training (unless eval_every)
CHECKPOINTS_PER_TRAINING = 4  # a killed run resumes training from the last of these (unless checkpoint_every)


@dataclass(frozen=True)
class Training:
    epochs: float
    learning_rate: float
    batch_size: int
    grad_accum: int
    warmup_ratio: float
    lr_scheduler: str
    weight_decay: float
    max_seq_len: int
    loss_on: str
    group_by_length: bool
    packing: bool
    mixed_precision: str
    seed: int
    gradient_checkpointing: bool
    report_to: tuple[str, ...]
    load_best: bool
    distributed: Distributed
    max_steps: int | None = None
    eval_every: int | None = None  # None: EVALS_PER_TRAINING evaluations
    checkpoint_every: int | None = None  # None: CHECKPOINTS_PER_TRAINING checkpoints
    early_stopping: EarlyStopping | None = None

    @property
    def keeps_best(self) -> bool:
        """Whether training ends on its best checkpoint (by held-out loss): load_best, or early stopping."""
        return self.load_best or self.early_stopping is not None


@dataclass(frozen=True)
class Adapter:
    name: str
    method: str
    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...] | None
    training: Training
    dataset: str | None = None  # None for an adapter trained elsewhere
    from_: str | None = None  # the recipe's ``from``: a PEFT folder or hub id of an adapter trained elsewhere


@dataclass(frozen=True)
class Int4:
    block_size: int
    accuracy_level: int
    symmetric: bool
    algorithm: str


@dataclass(frozen=True)
class Target:
    name: str
    device: str
    provider: str | None
    precision: str
    int4: Int4
    adapter_weights: str
    adapters: tuple[str, ...] | None

    @property
    def execution_provider(self) -> str:
        """The provider the package runs on: the target's own, else its device's default."""
        return metadata.provider_of(self.device, self.provider)

    @property
    def profile(self) -> dict[str, Any]:
        """metadata/targets.json's profile of the execution provider."""
        return metadata.target_profile(self.execution_provider)


@dataclass(frozen=True)
class Parity:
    max_kl: float
    min_top1_agreement: float
    fp32_logit_tolerance: float
    enforce: bool


@dataclass(frozen=True)
class Evaluation:
    smoke_prompt: str
    max_new_tokens: int
    batch_size: int
    max_rows: int
    prompts: tuple[str, ...]
    decode_tokens: int
    pytorch: bool
    parity: Parity
    metrics: dict[str, tuple[str, ...]]
    datasets: dict[str, str]
    normalize: tuple[str, ...]


@dataclass(frozen=True)
class Spec:
    """Every part of a resolved recipe a later step reads, as views."""

    model: Model
    datasets: dict[str, Dataset]
    adapters: dict[str, Adapter]
    targets: dict[str, Target]
    evaluation: Evaluation

    def dataset_of(self, adapter: str) -> str | None:
        """The dataset whose rows adapter ``adapter`` trains on, or, trained elsewhere, is scored on
        (evaluation.datasets); None when it has neither."""
        return self.adapters[adapter].dataset or self.evaluation.datasets.get(adapter)

    @classmethod
    def of(cls, data: dict[str, Any]) -> Spec:
        """The views of a resolved recipe (defaults filled in)."""
        evaluation = data["evaluation"]
        return cls(
            model=_build(Model, data["model"]),
            datasets={
                name: _build(Dataset, spec, name=name, clean=_build(Clean, spec["clean"]))
                for name, spec in data["datasets"].items()
            },
            adapters={
                name: _build(Adapter, spec, name=name, training=_training(spec["training"]))
                for name, spec in data["adapters"].items()
            },
            targets={
                name: _build(Target, spec, name=name, int4=_build(Int4, spec["int4"]))
                for name, spec in data["targets"].items()
            },
            evaluation=_build(
                Evaluation,
                evaluation,
                parity=_build(Parity, evaluation["parity"]),
                metrics={name: tuple(found) for name, found in evaluation["metrics"].items()},
            ),
        )


def _training(data: dict[str, Any]) -> Training:
    stopping = data.get("early_stopping")
    return _build(
        Training,
        data,
        distributed=_build(Distributed, data["distributed"]),
        **({"early_stopping": _build(EarlyStopping, stopping)} if stopping is not None else {}),
    )


VIEWS = {
    "model": Model,
    "datasets.<name>": Dataset,
    "datasets.<name>.clean": Clean,
    "adapters.<name>": Adapter,
    "adapters.<name>.training": Training,
    "adapters.<name>.training.early_stopping": EarlyStopping,
    "adapters.<name>.training.distributed": Distributed,
    "targets.<name>": Target,
    "targets.<name>.int4": Int4,
    "evaluation": Evaluation,
    "evaluation.parity": Parity,
}


def field_names(view: type) -> set[str]:
    """The recipe fields a view holds (without ``name``, which is the key it is stored under)."""
    recipe_name = {attribute: key for key, attribute in KEYWORDS.items()}
    return {recipe_name.get(f.name, f.name) for f in fields(view)} - {"name"}
