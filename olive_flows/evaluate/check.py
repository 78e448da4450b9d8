"""Check a staged package where this machine can run it: smoke test, then task scores.

The smoke test generates with the base model and with every adapter and fails the run on any
error. The scores compare the base and each adapter on the adapter's held-out rows, computed on
the exported package itself, the artifact that ships.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from olive_flows.data.prepare import PreparedDataset
from olive_flows.evaluate.runtime import PackageRuntime, provider_available
from olive_flows.evaluate.tasks import PackageCheckFailed, read_eval_rows, score_rows, smoke_check
from olive_flows.recipe.model import Recipe
from olive_flows.run.console import Console


def check_package(
    recipe: Recipe,
    target: str,
    folder: Path,
    *,
    datasets: dict[str, PreparedDataset],
    genai_provider: str | None,
    console: Console,
) -> tuple[dict[str, Any], str]:
    """Smoke-test the package and score it on the held-out rows, where this machine can run it."""
    evaluation = recipe.data["evaluation"]
    native = provider_available(genai_provider)
    try:
        runtime = PackageRuntime(folder, genai_provider if native else None)
        texts = smoke_check(runtime, evaluation["smoke_prompt"], evaluation["max_new_tokens"])
    except (PackageCheckFailed, RuntimeError) as exc:
        if native:
            raise PackageCheckFailed(f"package {target}: {exc}") from exc
        note = f"not verified here: needs {genai_provider} ({exc})"
        console.say(f"package {target}: {note}")
        return {}, note
    note = "passed" if native else f"passed on CPU (the {genai_provider} provider is not available here)"
    console.say(f"package {target}: smoke check {note}; prompt: {evaluation['smoke_prompt']!r}")
    for label, text in texts.items():
        console.detail(f"{label:>12}: {text.strip()[:100]!r}")
    return _score(recipe, target, runtime, datasets, console), note


def _score(
    recipe: Recipe, target: str, runtime: PackageRuntime, datasets: dict[str, PreparedDataset], console: Console
) -> dict[str, Any]:
    evaluation = recipe.data["evaluation"]
    result: dict[str, Any] = {"base": {"metrics": {}, "samples": {}}, "adapters": {}}
    base_cache: dict[str, Any] = {}
    rows_table = []
    for adapter in recipe.target_adapters(target):
        dataset = recipe.adapters[adapter]["dataset"]
        metrics = evaluation["metrics"].get(dataset)
        if not metrics:
            continue
        rows = read_eval_rows(datasets[dataset].eval_file, evaluation["max_rows"])
        if dataset not in base_cache:
            base_cache[dataset] = score_rows(runtime, rows, metrics, None, evaluation["max_new_tokens"])
        base = base_cache[dataset]
        tuned = score_rows(runtime, rows, metrics, adapter, evaluation["max_new_tokens"])
        result["adapters"][adapter] = {"metrics": tuned.metrics, "samples": tuned.samples, "rows": len(rows)}
        result["base"]["metrics"].update({f"{adapter}/{m}": v for m, v in base.metrics.items()})
        result["base"]["samples"][adapter] = base.samples
        rows_table.append(
            (adapter, dataset, metrics[0], base.metrics[metrics[0]], tuned.metrics[metrics[0]], len(rows))
        )
    if rows_table:
        console.say(f"package {target}: task scores on held-out rows (exported package, greedy decoding)")
        console.detail(f"{'adapter':<14}{'dataset':<14}{'metric':<14}{'base':>8}{'adapter':>9}{'rows':>6}")
        for adapter, dataset, metric, base_score, tuned_score, rows in rows_table:
            console.detail(f"{adapter:<14}{dataset:<14}{metric:<14}{base_score:>8.3f}{tuned_score:>9.3f}{rows:>6}")
    return result
