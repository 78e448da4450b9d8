"""report.md and a self-contained report.html for a package, from eval.json and the training logs.

report.md links the plots in report/; report.html embeds them, so it can be mailed or attached to
a ticket on its own. Both show: the metrics of the base model and each adapter, perplexity on the
PyTorch model and on the package with the parity verdict, decode speed, package and adapter sizes,
training and held-out loss and the learning rate against step, generation samples side by side,
the resolved recipe and the versions the package was built with, and a warning for an adapter
whose training log shows it over-fitting (``overfitting``).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import yaml

from olive_flows.evaluate.evaluation import parity_text
from olive_flows.evaluate.metrics import metric_label
from olive_flows.layout import REPORT_HTML, REPORT_MD, REPORT_PLOTS

OVERFIT_EVALUATIONS = 3  # the last evaluations of a training log compared
OVERFIT_RISE = 0.02  # relative rise of the held-out loss that counts; smaller ones are noise


def _train_loss_before(history: list[dict[str, Any]], after: int, upto: int) -> float | None:
    """Mean training loss logged at steps in (after, upto]; else the last one logged at or before upto."""
    losses = [e["loss"] for e in history if "loss" in e and after < e["step"] <= upto]
    if losses:
        return sum(losses) / len(losses)
    earlier = [e["loss"] for e in history if "loss" in e and e["step"] <= upto]
    return earlier[-1] if earlier else None


def overfitting(history: list[dict[str, Any]]) -> str | None:
    """A warning when a training log (training_log.json) shows over-fitting, else None.

    The rule: over the last OVERFIT_EVALUATIONS evaluations (all of them when fewer, at least two),
    the held-out loss (eval_loss) rose by more than OVERFIT_RISE (2%) from the first to the last,
    while the training loss fell over the same steps. The training loss at an evaluation is the mean
    of the losses logged since the evaluation before it, which smooths its per-step noise. Falling
    training loss with rising held-out loss means the adapter learns its training rows, not the task.
    """
    evaluations = [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e]
    if len(evaluations) < 2:
        return None
    window = evaluations[-OVERFIT_EVALUATIONS:]
    (first_step, first), (last_step, last) = window[0], window[-1]
    steps = [step for step, _ in evaluations]
    before = dict(zip(steps, [0, *steps[:-1]], strict=True))  # each evaluation's step -> the one before it
    train_first = _train_loss_before(history, before[first_step], first_step)
    train_last = _train_loss_before(history, before[last_step], last_step)
    if train_first is None or train_last is None or first <= 0:
        return None
    if last > first * (1 + OVERFIT_RISE) and train_last < train_first:
        return (
            f"held-out loss rose from {first:.4f} to {last:.4f} (+{last / first - 1:.0%}) between steps "
            f"{first_step} and {last_step} while training loss fell from {train_first:.4f} to {train_last:.4f}: "
            "the adapter is over-fitting its training rows; consider training.early_stopping or load_best, "
            "fewer steps or more data"
        )
    return None


def _plot(history: list[dict[str, Any]], title: str) -> tuple[bytes, bytes]:
    """PNG bytes of (loss curves, learning-rate schedule) for one adapter's training log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def png(fig) -> bytes:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        return buffer.getvalue()

    train = [(e["step"], e["loss"]) for e in history if "loss" in e]
    held_out = [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e]
    rate = [(e["step"], e["learning_rate"]) for e in history if "learning_rate" in e]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    if train:
        ax.plot(*zip(*train, strict=True), label="training loss")
    if held_out:
        ax.plot(*zip(*held_out, strict=True), "o-", label="held-out loss")
    ax.set(
        xlabel="step",
        ylabel="loss",
        title=f"{title}: loss",
        yscale="log" if train and min(v for _, v in train) > 0 else "linear",
    )
    ax.legend()
    loss_png = png(fig)
    fig, ax = plt.subplots(figsize=(6, 2.4))
    if rate:
        ax.plot(*zip(*rate, strict=True))
    ax.set(xlabel="step", ylabel="learning rate", title=f"{title}: learning rate")
    return loss_png, png(fig)


def _table(header: list[str], rows: list[list[Any]]) -> list[list[str]]:
    return [
        header,
        *[["" if c is None else (f"{c:.4g}" if isinstance(c, float) else str(c)) for c in row] for row in rows],
    ]


def _sections(evaluation: dict[str, Any], manifest: dict[str, Any]) -> list[tuple[str, list[list[str]] | str]]:
    """Report content as (title, table rows or preformatted text) pairs, shared by Markdown and HTML."""
    base, adapters = evaluation["base"], evaluation["adapters"]
    metric_rows = []
    for name, entry in adapters.items():
        for metric, value in entry["metrics"].items():
            shown = metric_label(metric, evaluation.get("normalize"))  # older eval.json files do not record it
            metric_rows.append(
                [name, entry["dataset"], shown, base["metrics"].get(f"{name}/{metric}"), value, entry["rows"]]
            )
    ppl_rows = [["base (pooled)", base["perplexity"]["pytorch"], base["perplexity"]["onnx"]]]
    for name, entry in adapters.items():
        ppl_rows.append([f"base on {name}'s rows", *base["perplexity_by_adapter"][name].values()])
        ppl_rows.append([name, entry["perplexity"]["pytorch"], entry["perplexity"]["onnx"]])
    verdict = parity_text(evaluation["parity"])
    speed_rows = [["base", base["decode_tokens_per_s"], base["time_to_first_token_s"]]]
    speed_rows += [[n, e["decode_tokens_per_s"], e["time_to_first_token_s"]] for n, e in adapters.items()]
    sizes = evaluation["sizes_mb"]
    size_rows = [["base model", sizes["base_model"]], *[[f"adapter {n}", mb] for n, mb in sizes["adapters"].items()]]
    sample_header = ["prompt", "base", *adapters]
    sample_rows = [[s.get(k, "") for k in sample_header] for s in evaluation["samples"]]
    return [
        (
            "Task metrics on held-out rows (exported package, greedy decoding)",
            _table(["adapter", "dataset", "metric", "base", "adapter", "rows"], metric_rows),
        ),
        (
            "Perplexity: PyTorch with the PEFT adapter vs the exported package",
            _table(["model", "pytorch", "onnx"], ppl_rows),
        ),
        ("Parity", verdict),
        ("Decode speed", _table(["model", "tokens/s", "time to first token (s)"], speed_rows)),
        ("Size (MB)", _table(["file", "MB"], size_rows)),
        ("Samples", _table(sample_header, sample_rows)),
        ("Versions", yaml.safe_dump(manifest.get("versions", {}), sort_keys=True)),
    ]


def _markdown_table(rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(
    folder: Path,
    evaluation: dict[str, Any],
    manifest: dict[str, Any],
    histories: dict[str, list[dict]],
    recipe: dict[str, Any],
) -> None:
    """Write report.md, report.html and the plots in report/ into the package ``folder``."""
    plots_dir = folder / REPORT_PLOTS
    plots_dir.mkdir(exist_ok=True)
    images: list[tuple[str, str, bytes]] = []  # (caption, file name, png)
    for adapter, history in histories.items():
        if history:
            loss, rate = _plot(history, adapter)
            images += [(f"{adapter}: training and held-out loss", f"loss-{adapter}.png", loss)]
            images += [(f"{adapter}: learning rate", f"lr-{adapter}.png", rate)]
    for _, name, data in images:
        (plots_dir / name).write_bytes(data)
    warnings = {adapter: overfitting(history) for adapter, history in histories.items()}
    warnings = {adapter: text for adapter, text in warnings.items() if text}

    title = f"olive-flows report: {manifest['recipe']['name']} / {manifest['target']['name']}"
    target = manifest["target"]
    intro = (
        f"Base model {manifest['base_model']['id']}, {target['precision']} for {target['provider']} "
        f"(runtime: {target['runtime_package']}); smoke check: {manifest['smoke_check']}."
    )
    sections = _sections(evaluation, manifest)
    recipe_yaml = yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)

    md = [f"# {title}", "", intro, ""]
    for heading, content in sections:
        md += [
            f"## {heading}",
            "",
            _markdown_table(content) if isinstance(content, list) else f"```\n{content}\n```",
            "",
        ]
    if images or warnings:
        md += ["## Training", ""] + [f"**Warning: {adapter}**: {text}" for adapter, text in warnings.items()]
        md += [""] * bool(warnings)
        md += [f"![{caption}]({REPORT_PLOTS}/{name})" for caption, name, _ in images] + [""]
    md += ["## Resolved recipe", "", f"```yaml\n{recipe_yaml}```", ""]
    (folder / REPORT_MD).write_text("\n".join(md), encoding="utf-8")

    parts = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>"]
    for heading, content in sections:
        body = _html_table(content) if isinstance(content, list) else f"<pre>{html.escape(content)}</pre>"
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    if images or warnings:
        parts.append("<h2>Training</h2>")
        parts += [
            f'<p class="warning"><strong>Warning: {html.escape(adapter)}</strong>: {html.escape(text)}</p>'
            for adapter, text in warnings.items()
        ]
        for caption, _, data in images:
            encoded = base64.b64encode(data).decode()
            parts.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{encoded}"><figcaption>{html.escape(caption)}</figcaption></figure>'
            )
    parts.append(f"<h2>Resolved recipe</h2><pre>{html.escape(recipe_yaml)}</pre>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
        "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}"
        "th{background:#f3f3f3}.warning{background:#fff4e5;border-left:4px solid #e69500;padding:.5rem}pre{background:#f7f7f7;padding:.75rem;overflow:auto}figure{margin:1rem 0}"
    )
    page = f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{style}</style></head><body>{"".join(parts)}</body></html>\n'
    (folder / REPORT_HTML).write_text(page, encoding="utf-8")
