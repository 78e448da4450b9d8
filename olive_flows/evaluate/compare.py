"""Two packages side by side (``olive-flows compare``): the scores each one's evaluation recorded,
on held-out rows that are the same when the datasets' fingerprints match, and their sample answers;
or, with ``--rescore``, both scored again in one run on the same held-out rows (a new adapter trained
on more data against the one in use: their runs held out different rows).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from olive_flows.console import Console
from olive_flows.evaluate.assess import package_recipe
from olive_flows.evaluate.evaluation import EvalSubject, score_package
from olive_flows.layout import Workspace
from olive_flows.package.versions import Version
from olive_flows.problems import UserError


@dataclass(frozen=True)
class Comparison:
    """Rows of (measure, A, B) and the sample answers both packages gave to the same prompts."""

    a: Version
    b: Version
    rows: list[tuple[str, Any, Any]]
    same_rows: dict[str, bool]  # adapter -> whether both scored it on the same held-out rows
    samples: list[tuple[str, str, Any, Any]]  # prompt, model (base or adapter), answer of A, of B
    rescored: bool = False  # both scored again in this run, on the same rows


def rescored(a: Version, b: Version, console: Console) -> tuple[Version, Version]:
    """Both packages scored again, side by side in this run, on the held-out rows their recipe's
    output folder holds now (those of the latest run, which B usually is): task metrics, ONNX
    perplexity, speed and samples from the same rows and prompts. The PyTorch side is left out:
    only the packages are compared."""
    recipe = package_recipe(b.folder)
    subject = EvalSubject.of(recipe, b.manifest, Workspace(_recipe_root(b.folder)))
    return (
        replace(a, scores=score_package(recipe, a.folder, subject, console, f"scoring {a.label}")),
        replace(b, scores=score_package(recipe, b.folder, subject, console, f"scoring {b.label}")),
    )


def _recipe_root(package: Path) -> Path:
    """The recipe output folder a package belongs to: its parent, or for a kept version
    (``_versions/<target>/<version>/``) three levels up."""
    for root in (package.parent, *package.parents[1:3]):
        if (root / "_data").is_dir():
            return root
    raise UserError(f"{package}: not inside a recipe's output folder (no _data/ beside it): cannot score it again")


def compare(a: Version, b: Version, rescore: bool = False) -> Comparison:
    rows: list[tuple[str, Any, Any]] = [("size (MB)", round(a.size_mb, 1), round(b.size_mb, 1))]
    adapters_a, adapters_b = a.scores.get("adapters", {}), b.scores.get("adapters", {})
    base_a, base_b = a.scores.get("base", {}), b.scores.get("base", {})
    rows.append(("base decode (tokens/s)", base_a.get("decode_tokens_per_s"), base_b.get("decode_tokens_per_s")))
    same_rows = {}
    for adapter in sorted(set(adapters_a) | set(adapters_b)):
        one, two = adapters_a.get(adapter, {}), adapters_b.get(adapter, {})
        for metric in sorted(set(one.get("metrics", {})) | set(two.get("metrics", {}))):
            rows.append((f"{adapter}/{metric}", one.get("metrics", {}).get(metric), two.get("metrics", {}).get(metric)))
        rows.append(
            (
                f"{adapter}/perplexity",
                (one.get("perplexity") or {}).get("onnx"),
                (two.get("perplexity") or {}).get("onnx"),
            )
        )
        rows.append((f"{adapter} decode (tokens/s)", one.get("decode_tokens_per_s"), two.get("decode_tokens_per_s")))
        data_a = a.manifest.get("adapters", {}).get(adapter, {}).get("dataset") or {}
        data_b = b.manifest.get("adapters", {}).get(adapter, {}).get("dataset") or {}
        same_rows[adapter] = rescore or (bool(data_a.get("sha256")) and data_a.get("sha256") == data_b.get("sha256"))
    answers_b = {s["prompt"]: s for s in b.scores.get("samples", [])}
    samples = [
        (sample["prompt"], model, sample.get(model), answers_b[sample["prompt"]].get(model))
        for sample in a.scores.get("samples", [])
        if sample["prompt"] in answers_b
        for model in sample
        if model != "prompt"
    ]
    return Comparison(a, b, rows, same_rows, samples, rescore)


def text(result: Comparison) -> str:
    """The comparison as terminal lines."""
    width = max(len(name) for name, _, _ in result.rows)
    lines = [f"A: {result.a.folder} ({result.a.label})", f"B: {result.b.folder} ({result.b.label})"]
    how = "scored again now, on the same held-out rows" if result.rescored else "as their runs scored them"
    lines += [how, ""]
    lines.append(f"{'':<{width}}  {'A':>12}  {'B':>12}")
    lines += [f"{name:<{width}}  {_shown(x):>12}  {_shown(y):>12}" for name, x, y in result.rows]
    for adapter, same in result.same_rows.items():
        if not same:
            lines.append(f"note: {adapter} was scored on different held-out rows in A and B (its dataset changed)")
    if result.samples:
        lines += ["", "sample answers (A | B):"]
        for prompt, model, x, y in result.samples:
            lines.append(f"  [{model}] {prompt}\n    A: {x}\n    B: {y}")
    return "\n".join(lines)


def page(result: Comparison) -> str:
    """The comparison as a self-contained HTML page."""
    esc = lambda value: html.escape(_shown(value))  # noqa: E731
    table = "".join(f"<tr><th>{esc(n)}</th><td>{esc(x)}</td><td>{esc(y)}</td></tr>" for n, x, y in result.rows)
    notes = "".join(
        f"<p class=note>{esc(a)} was scored on different held-out rows in A and B.</p>"
        for a, same in result.same_rows.items()
        if not same
    )
    samples = "".join(
        f"<tr><td>{esc(model)}</td><td>{esc(prompt)}</td><td>{esc(x)}</td><td>{esc(y)}</td></tr>"
        for prompt, model, x, y in result.samples
    )
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8><title>olive-flows compare</title>
<style>body{{font:14px system-ui,sans-serif;margin:2rem;max-width:70rem}}table{{border-collapse:collapse;margin:1rem 0}}
td,th{{border:1px solid #ccd;padding:.3rem .6rem;text-align:left;vertical-align:top}}.note{{color:#a40}}</style></head><body>
<h1>olive-flows compare</h1><p>A: {esc(str(result.a.folder))} ({esc(result.a.label)})<br>B: {esc(str(result.b.folder))} ({esc(result.b.label)})</p>
<table><tr><th></th><th>A</th><th>B</th></tr>{table}</table>{notes}
<h2>Sample answers</h2><table><tr><th>model</th><th>prompt</th><th>A</th><th>B</th></tr>{samples}</table></body></html>
"""


def _shown(value: Any) -> str:
    return "-" if value is None else str(value)


def version_at(folder: Path) -> Version:
    """A package folder as a Version (labelled by its folder name)."""
    return Version.of(folder, folder.name)
