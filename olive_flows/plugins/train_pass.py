"""Olive's LoRA, QLoRA and DoRA passes, computing logits only where the loss is taken.

A causal LM's LM head is a large share of a small model's training compute (49152 x 576 on
SmolLM2-135M, a fifth of its weights), yet with ``loss_on: assistant`` most positions carry no
label: the prompt, and the padding. These passes are Olive's own, with one change to the batches
Olive's collator builds: a boolean ``logits_to_keep`` that marks the positions whose next token is
learned, and those tokens as ``shift_labels``. transformers' causal LMs then project only those
hidden states onto the vocabulary and ForCausalLMLoss takes the labels as given, so the loss and
its gradients are the ones the whole-sequence computation gives (the same sum over the same
tokens), at a fraction of the LM head's cost. Models whose forward does not slice its hidden states
this way (remote code) get Olive's batches unchanged.

With ``packing`` (the recipe's ``training.packing``) they also pack each batch: the
batch's rows end to end as one sequence, position ids restarting at each row and no attention mask,
so no padding is computed. A model on transformers' sdpa attention then attends within each row on
its own (models/packed_attention.py); other attentions read the rows from the position ids (one
causal block per row in their mask, or flash-attention's variable-length kernel), so no row attends
to another. No label sits on a row's first token (in a padded batch no position predicts it). A
model whose attention mixes packed rows (checked on two short rows before training: the packed
logits must equal the rows' own) trains on padded batches.

With ``mixed_precision`` (the recipe's ``training.mixed_precision``, resolved here, on the machine that
trains) they train in transformers' bf16 mixed precision where the device computes bf16 in hardware
(make bench: ``train_vs_peft`` against ``train_vs_peft_bf16`` shows what it gains on the CPU it runs on).

They also take two settings of their own, ``early_stopping_patience`` and ``early_stopping_threshold``
(compiled from ``training.early_stopping``): Olive builds its transformers.Trainer without a way to
pass callbacks, so while one of these passes trains, transformers' EarlyStoppingCallback sits in
``transformers.trainer.DEFAULT_CALLBACKS``, which every Trainer adds (as run/training_log.py does).

Under data parallelism (olive_flows/world.py) they train on every rank: rank 0's pass, started by Olive, tells the
other ranks to run the same pass on the same input model, loads the model on its own device rather than
spread over every GPU (Olive's ``device_map: auto`` is model parallelism), and each rank keeps a record of
the rows it trained on (``<output_dir>/ranks/rank-<rank>.json``): disjoint shards, or a bug.

Olive cannot load a pass from a workflow config: plugins/__init__.py names these in the package config
it hands Olive (and writes next to the compiled configs for ``olive run``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from olive.passes.olive_pass import PassConfigParam
from olive.passes.pytorch.lora import DeviceMap, DoRA, LoRA, QLoRA
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from olive_flows import metadata
from olive_flows.callbacks import on_every_trainer
from olive_flows.data.tokenize import IGNORE  # Olive's collator pads labels with it too
from olive_flows.files import write_json
from olive_flows.models.logits import slices_chosen_logits
from olive_flows.models.packed_attention import attending_per_row
from olive_flows.world import joined

logger = logging.getLogger(f"olive.{__name__}")  # under Olive's logger: its lines go to the job log

RECORDED_ROWS = 10_000  # a rank's record lists the digests of at most this many rows


def trains_in_bf16(setting: str, torch_dtype: str | None, natively: Callable[[], bool]) -> bool:
    """Whether a training with ``training.mixed_precision: setting`` runs in bf16 mixed precision:
    always for bf16, never for fp32, and for auto where ``natively()`` says the device computes bf16
    in hardware, unless the model is loaded in float16 (Olive then trains in fp16 mixed precision)."""
    return setting == "bf16" or (setting == "auto" and torch_dtype != "float16" and natively())


def bf16_natively(cpu_flags: set[str] | None = None) -> bool:
    """Whether this machine trains on a device with bf16 matrix products in hardware: a CUDA GPU that
    supports bf16, or else a CPU with one of metadata/training.json's flags (``cpu_flags``: those of
    /proc/cpuinfo; none where there is no such file, so other systems train in fp32)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    if cpu_flags is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        except OSError:
            cpuinfo = ""
        cpu_flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":")[1].split()}
    return bool(cpu_flags & set(metadata.load("training")["bf16_cpu_flags"]))


def keeps_chosen_logits(model: Any) -> bool:
    """Whether ``model`` projects only the positions a boolean ``logits_to_keep`` marks
    (models/logits.py) and computes its loss with ForCausalLMLoss, which accepts ``shift_labels``."""
    from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return slices_chosen_logits(model) and LOSS_MAPPING.get(getattr(base, "loss_type", None)) is ForCausalLMLoss


def pack_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The tokenized ``rows`` (tensors ``input_ids`` and ``labels``; no labels: every token learned, as
    Olive's collator reads them) as one packed sequence: a batch of one with ``position_ids``
    restarting at each row, no ``attention_mask`` and no KV cache (transformers reads packed rows
    from the position ids only when there is neither)."""
    import torch

    ignore = torch.tensor([IGNORE])
    labels = [row.get("labels", row["input_ids"]) for row in rows]
    return {
        "input_ids": torch.cat([row["input_ids"] for row in rows])[None],
        "labels": torch.cat([torch.cat([ignore, label[1:]]) for label in labels])[None],
        "position_ids": torch.cat([torch.arange(len(row["input_ids"])) for row in rows])[None],
        "use_cache": False,
    }


def keeps_packed_rows_apart(model: Any) -> bool:
    """Whether ``model`` gives two short rows packed into one sequence (pack_rows) the logits it gives
    each row alone: its attention reads the packed rows from the position ids."""
    import torch

    device = next(model.parameters()).device
    rows = [{"input_ids": torch.arange(3, 8)}, {"input_ids": torch.arange(9, 13)}]
    packed = pack_rows(rows)
    training = model.training
    model.eval()  # no dropout
    try:
        with torch.no_grad():
            alone = [model(input_ids=row["input_ids"][None].to(device), use_cache=False)["logits"][0] for row in rows]
            ids, positions = packed["input_ids"].to(device), packed["position_ids"].to(device)
            together = model(input_ids=ids, position_ids=positions, use_cache=False)["logits"][0].float()
    finally:
        model.train(training)
    expected = torch.cat(alone).float()
    return bool(torch.allclose(together, expected, atol=1e-3 * float(expected.abs().max()), rtol=0))


def keep_learned_logits(batch: dict[str, Any]) -> dict[str, Any]:
    """Add ``logits_to_keep`` (the positions whose next token is learned) and ``shift_labels``
    (those next tokens, in the order the model flattens the kept positions) to a padded batch."""
    import torch

    labels = batch["labels"]
    targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE)
    keep = targets.ne(IGNORE)
    return {**batch, "logits_to_keep": keep, "shift_labels": targets[keep]}


@contextlib.contextmanager
def early_stopping(patience: int | None, threshold: float):
    """With ``patience``, add an EarlyStoppingCallback to every Trainer created inside the block."""
    if patience is None:
        yield
        return
    from transformers import EarlyStoppingCallback

    callback = EarlyStoppingCallback(early_stopping_patience=patience, early_stopping_threshold=threshold)
    logger.info("Early stopping: after %d evaluations without a lower eval_loss (by > %g)", patience, threshold)
    with on_every_trainer(callback):
        yield


def row_digest(row: dict[str, Any]) -> str:
    """A short digest of one tokenized row, to tell which rows a rank trained on."""
    ids = row["input_ids"]
    ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    return hashlib.sha1(json.dumps(ids).encode()).hexdigest()[:12]


class RowRecord(TrainerCallback):
    """Counts the rows this process trains on and keeps their digests: it wraps the collate function
    of the training DataLoader only (evaluation batches come through another loader)."""

    def __init__(self) -> None:
        self.rows = 0
        self.digests: list[str] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, train_dataloader: Any = None, **kwargs: Any) -> None:
        loader = getattr(train_dataloader, "base_dataloader", train_dataloader)  # accelerate wraps the DataLoader
        collate = loader.collate_fn

        def recording(rows: list[dict[str, Any]]) -> Any:
            self.rows += len(rows)
            self.digests.extend(row_digest(row) for row in rows[: RECORDED_ROWS - len(self.digests)])
            return collate(rows)

        loader.collate_fn = recording
        if loader is not train_dataloader:  # resuming copies the wrapper's collate_fn into a new loader
            train_dataloader.collate_fn = recording

    def write(self, folder: Path, world_size: int) -> None:
        ranks = joined()
        rank = ranks.world.rank if ranks else 0
        record = {"rank": rank, "world_size": world_size, "rows": self.rows, "digests": self.digests}
        write_json(folder / "ranks" / f"rank-{rank}.json", record)


class LearnedLogitsOnly:
    """Mixed into an Olive LoRA-family pass: its trainer's batches ask for the learned logits only
    (and are packed when asked), and it trains on every rank of a data-parallel run."""

    learned_logits_only = False  # decided per training run, from the model
    packed = False  # likewise: the recipe's training.packing, where the model keeps packed rows apart

    @classmethod
    def _default_config(cls, accelerator_spec: Any) -> dict[str, PassConfigParam]:
        return {
            **super()._default_config(accelerator_spec),
            "early_stopping_patience": PassConfigParam(
                type_=int | None,
                default_value=None,
                description="Stop after this many evaluations in a row without a lower eval_loss (None: never).",
            ),
            "early_stopping_threshold": PassConfigParam(
                type_=float, default_value=0.0, description="Smallest drop of eval_loss that counts as one."
            ),
            "world_size": PassConfigParam(
                type_=int, default_value=1, description="Processes training together (data parallel)."
            ),
            "packing": PassConfigParam(
                type_=bool,
                default_value=False,
                description="Train each batch's rows as one packed sequence (where the model keeps them apart).",
            ),
            "mixed_precision": PassConfigParam(
                type_=str,
                default_value="fp32",
                description="bf16 mixed precision: auto (where the device computes bf16 natively), bf16 or fp32.",
            ),
        }

    def _run_for_config(self, model: Any, config: Any, output_model_path: str) -> Any:
        ranks = joined()
        running = ranks.world.size if ranks else 1
        if config.world_size != running:
            raise ValueError(f"this training was compiled for {config.world_size} processes and runs in {running}")
        import torch

        args = config.training_args
        bf16 = trains_in_bf16(config.mixed_precision, config.torch_dtype, bf16_natively)
        logger.info(
            "Training %s bf16 mixed precision (training.mixed_precision: %s)",
            "in" if bf16 else "without",
            config.mixed_precision,
        )
        args.extra_args = args.extra_args or {}
        if bf16:
            args.extra_args["bf16"] = True
        # Without a GPU, transformers refuses bf16 and accelerate leaves processes undistributed,
        # unless told the training is on the CPU.
        if (bf16 or ranks) and not torch.cuda.is_available():
            args.extra_args["use_cpu"] = True
        if ranks and ranks.world.main:  # every rank resumes from the checkpoint rank 0 found
            folder = Path(args.output_dir)
            args.resume_from_checkpoint = get_last_checkpoint(str(folder)) if folder.is_dir() else None
            task = {"pass": self.to_json(check_object=True), "model": model.to_json(check_object=True)}
            ranks.tell({"train": task})
        return super()._run_for_config(model, config, output_model_path)

    def load_base_pytorch_model(self, model_handler: Any, config: Any, **kwargs: Any) -> Any:
        if joined():  # each rank holds the model on its own device; a sharding strategy places it itself
            import torch

            args = config.training_args
            sharded = bool(args.deepspeed or (args.extra_args or {}).get("fsdp"))
            config.device_map = DeviceMap.CURRENT_DEVICE if torch.cuda.is_available() and not sharded else None
        return super().load_base_pytorch_model(model_handler, config, **kwargs)

    def train_and_save_new_model(self, model: Any, tokenizer: Any, config: Any, *args: Any, **kwargs: Any) -> Any:
        self.learned_logits_only = keeps_chosen_logits(model)
        if self.learned_logits_only:
            logger.info("Training computes logits only at the learned positions")
        else:
            logger.info("Training computes every logit: this model's forward cannot skip positions")
        with attending_per_row(model, config.packing) as per_row:
            self.packed = config.packing and keeps_packed_rows_apart(model)
            if self.packed:
                logger.info(
                    "Training packs each batch's rows into one sequence: no padding is computed (%s)",
                    "attention per row" if per_row else "the model's attention reads the rows from the position ids",
                )
            elif config.packing:
                logger.info("Training pads each batch: this model's attention does not keep packed rows apart")
            stopping = early_stopping(config.early_stopping_patience, config.early_stopping_threshold)
            with stopping, on_every_trainer(RowRecord()) as record:
                trained = super().train_and_save_new_model(model, tokenizer, config, *args, **kwargs)
        record.write(Path(config.training_args.output_dir), config.world_size)
        return trained

    def collate_batch(self, batch: list[dict], tokenizer: Any) -> dict[str, Any]:
        import torch

        # rows padded before they got here (attention mask zeros) keep their padding and Olive's collator
        unpadded = all(bool(row.get("attention_mask", torch.ones(1)).all()) for row in batch)
        collated = pack_rows(batch) if self.packed and unpadded else super().collate_batch(batch, tokenizer)
        return keep_learned_logits(collated) if self.learned_logits_only else collated


class OliveFlowsLoRA(LearnedLogitsOnly, LoRA):
    """Olive's LoRA pass, learned logits only."""


class OliveFlowsQLoRA(LearnedLogitsOnly, QLoRA):
    """Olive's QLoRA pass, learned logits only."""


class OliveFlowsDoRA(LearnedLogitsOnly, DoRA):
    """Olive's DoRA pass, learned logits only."""
