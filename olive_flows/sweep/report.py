"""What a sweep leaves: ``report.html`` (the leaderboard and plots) and the winner as ``<name>.best.yaml``.

The best recipe is an ordinary recipe: ``extends`` the swept one, sets the winning values (and the
overrides the sweep ran with) as nested fields, and drops the ``sweep`` block (``sweep: null``), so
``olive-flows run`` builds the winner's package, with its training taken from Olive's cache.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from olive_flows.files import write_text_atomic
from olive_flows.recipe.catalog import builtin_recipes
from olive_flows.recipe.read import find_recipe, merge, parse_override
from olive_flows.recipe.source import SourceMap
from olive_flows.sweep.space import Sweep, override
from olive_flows.sweep.study import leaderboard
from olive_flows.validate.load import load_recipe


def best_trial(study: Any) -> Any | None:
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return study.best_trial if complete else None


def best_recipe_path(ref: str | Path, name: str) -> tuple[Path, str]:
    """Where the best recipe goes and what it extends: beside the swept recipe file, or, for a
    built-in recipe, in the working directory (extending the built-in by name)."""
    path = find_recipe(str(ref))
    if path in builtin_recipes().values() and not (Path.cwd() / str(ref)).is_file():
        return Path.cwd() / f"{name}.best.yaml", str(ref)
    return path.parent / f"{name}.best.yaml", path.name


def write_best_recipe(
    ref: str | Path, name: str, values: dict[str, Any], overrides: Sequence[str] = (), header: str = ""
) -> Path:
    """Write and validate ``<name>.best.yaml``: the swept recipe with ``overrides`` and ``values``."""
    path, parent = best_recipe_path(ref, name)
    document: dict[str, Any] = {}
    for text in [*overrides, *(override(p, v) for p, v in values.items())]:
        parts, value = parse_override(text)
        patch: Any = value
        for part in reversed(parts):
            patch = {part: patch}
        document = merge(document, patch, SourceMap())
    document.pop("sweep", None)
    body = yaml.safe_dump({"extends": parent, **document, "sweep": None}, sort_keys=False, allow_unicode=True)
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    write_text_atomic(path, comment + body)
    load_recipe(path)
    return path


def report_html(study: Any, sweep: Sweep, title: str) -> str:
    """The sweep's report: the leaderboard, the objective per trial and each parameter against it."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    plots = [_objective_plot(done, sweep)] if done else []
    plots += [_parameter_plot(done, sweep, path) for path in sweep.parameters if done]
    rows = "".join(
        "<tr>"
        + f"<td>{t.number}</td><td>{t.state.name.lower()}</td>"
        + f"<td>{'' if t.value is None else f'{t.value:.4f}'}</td>"
        + f"<td>{html.escape(' '.join(f'{p}={v}' for p, v in t.params.items()))}</td></tr>"
        for t in leaderboard(study, sweep)
    )
    images = "".join(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">' for alt, data in plots)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:left}"
        "img{max-width:48%;margin:4px}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>objective: {html.escape(sweep.metric)} ({sweep.direction}); "
        f"sampler {sweep.sampler}</p><table><tr><th>trial</th><th>state</th><th>{html.escape(sweep.metric)}</th>"
        f"<th>parameters</th></tr>{rows}</table>{images}</body></html>\n"
    )


def _png(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _objective_plot(done: list[Any], sweep: Sweep) -> tuple[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 3.5))
    numbers, values = [t.number for t in done], [t.value for t in done]
    best = min if sweep.direction == "minimize" else max
    axes.plot(numbers, values, "o", label="trial")
    axes.step(numbers, [best(values[: i + 1]) for i in range(len(values))], where="post", label="best so far")
    axes.set(xlabel="trial", ylabel=sweep.metric, title=f"{sweep.metric} per trial")
    axes.legend()
    return f"{sweep.metric} per trial", _png(figure)


def _parameter_plot(done: list[Any], sweep: Sweep, path: str) -> tuple[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 3.5))
    points = [(t.params[path], t.value) for t in done if path in t.params]
    axes.plot([str(x) if isinstance(x, str) else x for x, _ in points], [y for _, y in points], "o")
    if sweep.parameters[path].log:
        axes.set_xscale("log")
    axes.set(xlabel=path, ylabel=sweep.metric, title=path.rsplit(".", 1)[-1])
    return f"{path} against {sweep.metric}", _png(figure)
