"""Evaluate a package: did each adapter help, and does the package behave like the trained model?

For the base model and each adapter, on the adapter's held-out rows: the task metrics the recipe
declares (greedy answers from the exported package), perplexity on the PyTorch model with its
PEFT adapter and on the package, a parity check between the two, decode speed, and generation
samples side by side. The result is the content of eval.json.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from olive_flows.console import Console, Progress
from olive_flows.data.formats import split_chat
from olive_flows.data.prepare import scored_split
from olive_flows.evaluate.metrics import score
from olive_flows.evaluate.perplexity import NLL, PyTorchScorer, examples, onnx_logits, token_nll
from olive_flows.evaluate.runtime import PackageRuntime
from olive_flows.evaluate.speed import decode_speed
from olive_flows.files import read_jsonl
from olive_flows.layout import Workspace, adapter_files
from olive_flows.paths import display_path
from olive_flows.problems import UserError
from olive_flows.recipe.model import Recipe
from olive_flows.recipe.views import Evaluation, Parity

SAMPLES_PER_DATASET = 2
PARITY_ROWS = 3
TORCH_BATCH = 16
SPEED_REPEATS = 3  # decode speed is the median of this many runs


@dataclass
class EvalSubject:
    """What one evaluation needs besides the package: the held-out rows of each adapter's dataset,
    the PEFT adapters and the base model for the PyTorch side (optional), and the package's precision."""

    rows: dict[str, list[dict[str, Any]]]  # adapter name -> held-out rows of its dataset
    dataset_of: dict[str, str]  # adapter name -> dataset name
    precision: str
    peft: dict[str, Path] = field(default_factory=dict)
    model_path: str | None = None
    trust_remote_code: bool = False

    @classmethod
    def of(cls, recipe: Recipe, manifest: dict[str, Any], workspace: Workspace) -> EvalSubject:
        """The subject of a package's manifest, from what a run leaves beside its packages: the
        audited rows of each adapter (``_data/``) and the PEFT adapters (``_peft/``)."""
        # adapters trained elsewhere without evaluation.datasets have no rows to be scored on
        adapters = [a for a, entry in manifest["adapters"].items() if entry["dataset"]]
        rows = {}
        for adapter in adapters:
            audit = workspace.audit(adapter)
            if not (audit / "stats.json").is_file():
                raise UserError(
                    f"{display_path(audit)} is missing: the held-out rows of adapter '{adapter}' are needed"
                )
            split = scored_split(json.loads((audit / "stats.json").read_text())["rows"])
            rows[adapter] = read_jsonl(audit / f"{split}.jsonl", recipe.spec.evaluation.max_rows)
        return cls(
            rows=rows,
            dataset_of={a: manifest["adapters"][a]["dataset"]["name"] for a in adapters},
            precision=manifest["target"]["precision"],
            peft={a: workspace.peft(a) for a in adapters if workspace.peft(a).is_dir()},
            model_path=manifest["base_model"].get("path"),
            trust_remote_code=recipe.spec.model.trust_remote_code,
        )


def _task_scores(
    runtime: PackageRuntime,
    rows: list[dict],
    metrics: Sequence[str],
    adapter: str | None,
    settings: Evaluation,
    progress: Progress,
) -> dict[str, float]:
    prompts = [split_chat(row) for row in rows]
    predictions = []
    for prompt, _ in prompts:
        # Answers as generated: evaluation.normalize decides what exact_match and contains ignore.
        predictions.append(runtime.generate(prompt, adapter, settings.max_new_tokens))
        progress.update()
    references = [reference for _, reference in prompts]
    return {m: round(score(m, predictions, references, settings.normalize), 4) for m in metrics}


def _onnx_nll(runtime: PackageRuntime, encoded: list, adapter: str | None, progress: Progress) -> NLL:
    total = NLL()
    for example in encoded:
        total = total.add(token_nll(onnx_logits(runtime, example, adapter), example))
        progress.update()
    return total


def _torch_nll(scorer: PyTorchScorer, encoded: list, adapter: str | None, progress: Progress) -> NLL:
    total = NLL()
    ordered = sorted(encoded, key=lambda e: len(e.input_ids))  # similar lengths pad least
    for start in range(0, len(ordered), TORCH_BATCH):
        batch = ordered[start : start + TORCH_BATCH]
        for example, logits in zip(batch, scorer.batch_logits(batch, adapter), strict=True):
            total = total.add(token_nll(logits, example))
        progress.update(len(batch))
    return total


def _perplexity(onnx: NLL, torch: NLL | None) -> dict[str, float | None]:
    return {"pytorch": _round(torch.perplexity) if torch else None, "onnx": _round(onnx.perplexity)}


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def evaluate_package(
    recipe: Recipe, folder: Path, subject: EvalSubject, runtime: PackageRuntime, console: Console, label: str
) -> dict[str, Any]:
    """Everything eval.json holds for the package in ``folder``; progress shows as ``label``."""
    from transformers import AutoTokenizer

    spec = recipe.spec
    settings = spec.evaluation
    adapters = [a for a in runtime.adapter_names if a in subject.rows]
    scorer = None
    if settings.pytorch and subject.model_path and all(a in subject.peft for a in adapters):
        console.detail("loading the PyTorch model and PEFT adapters for perplexity and parity")
        scorer = PyTorchScorer(subject.model_path, {a: subject.peft[a] for a in adapters}, subject.trust_remote_code)
    tokenizer = scorer.tokenizer if scorer else AutoTokenizer.from_pretrained(folder)
    samples = _sample_prompts(subject, adapters, settings)
    progress = console.progress(label, _work_items(subject, adapters, settings, bool(scorer), len(samples)), "items")

    def onnx(example, adapter):
        return onnx_logits(runtime, example, adapter)

    result: dict[str, Any] = {"base": {"metrics": {}, "perplexity_by_adapter": {}}, "adapters": {}}
    result["normalize"] = list(settings.normalize)  # how exact_match and contains compared
    base_metrics: dict[str, dict[str, float]] = {}
    base_total, base_torch_total = NLL(), NLL()
    parity_rows: list[dict[str, Any]] = []
    for adapter in adapters:
        training = spec.adapters[adapter].training
        dataset = subject.dataset_of[adapter]
        rows = subject.rows[adapter]
        metrics = settings.metrics.get(dataset, ())
        entry: dict[str, Any] = {"dataset": dataset, "rows": len(rows), "metrics": {}}
        if metrics:
            if dataset not in base_metrics:
                base_metrics[dataset] = _task_scores(runtime, rows, metrics, None, settings, progress)
            entry["metrics"] = _task_scores(runtime, rows, metrics, adapter, settings, progress)
            result["base"]["metrics"].update({f"{adapter}/{m}": v for m, v in base_metrics[dataset].items()})
        encoded = examples(tokenizer, rows, training.max_seq_len, training.loss_on)
        tuned_onnx = _onnx_nll(runtime, encoded, adapter, progress)
        base_onnx = _onnx_nll(runtime, encoded, None, progress)
        tuned_torch = _torch_nll(scorer, encoded, adapter, progress) if scorer else None
        base_torch = _torch_nll(scorer, encoded, None, progress) if scorer else None
        entry["perplexity"] = _perplexity(tuned_onnx, tuned_torch)
        result["base"]["perplexity_by_adapter"][adapter] = _perplexity(base_onnx, base_torch)
        base_total = base_total.add(base_onnx)
        if base_torch:
            base_torch_total = base_torch_total.add(base_torch)
        if scorer:
            parity_rows += _parity_rows(scorer, onnx, encoded[:PARITY_ROWS], adapter)
        result["adapters"][adapter] = entry
    result["base"]["perplexity"] = _perplexity(base_total, base_torch_total if scorer else None)
    if scorer:
        parity_rows += _parity_rows(scorer, onnx, examples(tokenizer, _first_rows(subject, adapters), 512, "all"), None)
    result["parity"] = _parity(result, subject.precision, parity_rows, settings.parity)

    prompt = [{"role": "user", "content": settings.smoke_prompt}]
    for adapter in [None, *adapters]:
        speed = decode_speed(runtime, prompt, adapter, settings.decode_tokens, repeats=SPEED_REPEATS)
        progress.update(SPEED_REPEATS)
        target = result["base"] if adapter is None else result["adapters"][adapter]
        target["decode_tokens_per_s"] = speed["tokens_per_s"]
        target["time_to_first_token_s"] = speed["time_to_first_token_s"]
    result["samples"] = _samples(runtime, samples, adapters, settings, progress)
    result["sizes_mb"] = _sizes(folder)
    progress.close()
    return result


def _work_items(subject: EvalSubject, adapters: list[str], settings: Evaluation, pytorch: bool, samples: int) -> int:
    """How many generations and scored rows the evaluation takes: the unit its progress counts."""
    items, scored = 0, set()
    for adapter in adapters:
        rows = len(subject.rows[adapter])
        if settings.metrics.get(subject.dataset_of[adapter]):
            items += rows * (1 if subject.dataset_of[adapter] in scored else 2)
            scored.add(subject.dataset_of[adapter])
        items += rows * (4 if pytorch else 2)  # perplexity: adapter and base, package (and PyTorch)
    return items + SPEED_REPEATS * (1 + len(adapters)) + samples * (1 + len(adapters))


def _first_rows(subject: EvalSubject, adapters: list[str]) -> list[dict[str, Any]]:
    return [subject.rows[a][0] for a in adapters if subject.rows[a]][:PARITY_ROWS]


def _parity_rows(scorer: PyTorchScorer, onnx, encoded, adapter: str | None) -> list[dict[str, Any]]:
    found = []
    for example in encoded:
        diff = float(np.abs(scorer.logits(example, adapter) - onnx(example, adapter)).max())
        found.append({"adapter": adapter or "base", "tokens": len(example.input_ids), "max_abs_logit_diff": diff})
    return found


def _parity(result: dict[str, Any], precision: str, rows: list[dict[str, Any]], settings: Parity) -> dict[str, Any]:
    """fp32: the logits must match PyTorch's within a tolerance. Other precisions: each perplexity
    must stay within a relative bound of PyTorch's."""
    if not rows:
        return {"checked": False, "reason": "no PyTorch side (evaluation.pytorch is off, or PEFT adapters are missing)"}
    if precision == "fp32":
        worst = max(r["max_abs_logit_diff"] for r in rows)
        tolerance = settings.fp32_logit_tolerance
        return {
            "checked": True,
            "kind": "logits",
            "max_abs_logit_diff": worst,
            "tolerance": tolerance,
            "ok": worst <= tolerance,
        }
    ratios = {"base": result["base"]["perplexity"]}
    ratios.update({name: entry["perplexity"] for name, entry in result["adapters"].items()})
    relative = {name: abs(p["onnx"] / p["pytorch"] - 1) for name, p in ratios.items() if p["pytorch"] and p["onnx"]}
    bound = settings.perplexity_bound
    return {
        "checked": True,
        "kind": "perplexity",
        "relative_difference": {name: round(value, 4) for name, value in relative.items()},
        "bound": bound,
        "ok": all(value <= bound for value in relative.values()),
        "max_abs_logit_diff": max(r["max_abs_logit_diff"] for r in rows),
    }


def _sample_prompts(subject: EvalSubject, adapters: list[str], settings: Evaluation) -> list[list[dict[str, str]]]:
    """The report's sample prompts: the recipe's, else the first held-out prompts of each chat dataset."""
    prompts = [[{"role": "user", "content": p}] for p in settings.prompts]
    if not prompts:
        seen = set()
        for adapter in adapters:
            dataset = subject.dataset_of[adapter]
            chat_rows = [row for row in subject.rows[adapter][:SAMPLES_PER_DATASET] if "messages" in row]
            if dataset not in seen:  # text datasets have no prompts to sample
                seen.add(dataset)
                prompts += [split_chat(row)[0] for row in chat_rows]
    return prompts


def _samples(
    runtime: PackageRuntime,
    prompts: list[list[dict[str, str]]],
    adapters: list[str],
    settings: Evaluation,
    progress: Progress,
) -> list[dict[str, str]]:
    samples = []
    for messages in prompts:
        sample = {"prompt": messages[-1]["content"]}
        for adapter in [None, *adapters]:
            sample[adapter or "base"] = runtime.generate(messages, adapter, settings.max_new_tokens).strip()
            progress.update()
        samples.append(sample)
    return samples


def package_bytes(folder: Path) -> tuple[int, dict[str, int]]:
    """Bytes of the package's base model (graph and external data) and of each adapter file."""
    base = sum(
        p.stat().st_size
        for p in folder.iterdir()
        if p.is_file() and (p.suffix == ".onnx" or p.name.endswith(".onnx.data"))
    )
    adapters = {name: path.stat().st_size for name, path in adapter_files(folder).items()}
    return base, adapters


def _sizes(folder: Path) -> dict[str, Any]:
    base, adapters = package_bytes(folder)
    return {
        "base_model": round(base / 1e6, 2),
        "adapters": {name: round(size / 1e6, 2) for name, size in adapters.items()},
    }
