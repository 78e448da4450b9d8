"""Check a package where this machine can run it: smoke test, evaluation, report.

A run assesses each staged package before it replaces the previous one; ``olive-flows eval``
assesses a built package again. Both go through ``assess_package``.

The smoke test generates with the base model and with every adapter and fails the run on any
error. The evaluation (evaluation.py) scores the exported package itself, the artifact that
ships, and compares it with the PyTorch model it came from; eval.json and the report are written
into the package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from olive_flows import metadata
from olive_flows.capture import output_to
from olive_flows.console import Console
from olive_flows.evaluate.evaluation import EvalSubject, evaluate_package, parity_text, score_package
from olive_flows.evaluate.metrics import metric_label
from olive_flows.evaluate.report import write_report
from olive_flows.evaluate.runtime import PackageRuntime, provider_available, provider_load_failure
from olive_flows.evaluate.smoke import PackageCheckFailed, smoke_check
from olive_flows.files import write_json
from olive_flows.layout import EVAL, RESOLVED_RECIPE, TRAINING_LOG, Workspace
from olive_flows.paths import display_path
from olive_flows.problems import Location, UserError
from olive_flows.recipe.model import Recipe

NOT_VERIFIED = "not verified here: "  # how a manifest's smoke_check starts when this machine could not run the package

# Fields earlier versions wrote into a package's recipe.json that the schema no longer has.
RETIRED_FIELDS = [("evaluation", "parity", "perplexity_bound")]  # parity measures KL and top-1 agreement now


def assess_package(
    recipe: Recipe,
    folder: Path,
    manifest: dict[str, Any],
    *,
    workspace: Workspace,
    console: Console,
    log: Path,
) -> dict[str, Any]:
    """Smoke-test, evaluate and report on the package in ``folder``, built as ``manifest`` says from
    the adapters and rows in ``workspace``; record the verdict in ``manifest`` and return eval.json's
    content ({} when the package cannot run here). What the libraries print goes to ``log``."""
    settings = recipe.spec.evaluation
    target = manifest["target"]["name"]
    genai_provider = metadata.target_profile(manifest["target"]["provider"])["genai_provider"]
    subject = EvalSubject.of(recipe, manifest, workspace)
    # Where the package's own provider cannot run here, it is checked on CPU, and a failure there
    # is "not verified" rather than broken (a bf16 CUDA graph, say, has no CPU kernels).
    reason = None if provider_available(genai_provider) else f"the {genai_provider} provider is not available here"
    try:
        provider = None if reason else genai_provider
        try:
            runtime = PackageRuntime(folder, provider)
        except RuntimeError as exc:
            failure = provider and provider_load_failure(provider, exc)
            if not failure:
                raise
            reason = failure
            runtime = PackageRuntime(folder)
        texts = smoke_check(runtime, settings.smoke_prompt, settings.max_new_tokens)
    except (PackageCheckFailed, RuntimeError) as exc:
        if not reason:
            raise PackageCheckFailed(f"package {target}: {exc}") from exc
        manifest["smoke_check"] = f"{NOT_VERIFIED}{reason}; on CPU: {exc}"
        console.say(f"package {target}: {manifest['smoke_check']}")
        return {}
    manifest["smoke_check"] = f"passed on CPU ({reason})" if reason else "passed"
    console.say(f"package {target}: smoke check {manifest['smoke_check']}; prompt: {settings.smoke_prompt!r}")
    for label, text in texts.items():
        console.detail(f"{label:>12}: {text.strip()[:100]!r}")

    console.say(f"package {target}: evaluating on held-out rows (log: {display_path(log)})")
    with output_to(log):
        evaluation = evaluate_package(recipe, folder, subject, runtime, console, f"package {target} evaluation")
    show(evaluation, console)
    write_json(folder / EVAL, evaluation)
    histories = {a: _history(subject.peft.get(a)) for a in evaluation["adapters"]}
    write_report(folder, evaluation, manifest, histories, recipe.data)
    parity = evaluation["parity"]
    if parity.get("checked") and not parity["ok"]:
        message = f"package {target}: PARITY BROKEN: the exported package does not follow the PyTorch model: {'; '.join(parity['failures'])}"
        if parity["enforced"]:
            raise PackageCheckFailed(
                message + ". The package was not published; to publish it anyway set evaluation.parity.enforce=false"
            )
        console.say(message + " (published anyway: evaluation.parity.enforce is false)")
    return evaluation


def score_current(
    recipe: Recipe, folder: Path, manifest: dict[str, Any], *, workspace: Workspace, console: Console, log: Path
) -> dict[str, Any]:
    """The current package in ``folder`` scored again on the held-out rows and scoring settings of
    the new package built as ``manifest`` says, on the same provider, so that promote.when: better
    compares the two on the same rows. Its own eval.json and report stay as they are. A current
    package that no longer runs here (damaged, or made for a runtime since replaced) has no scores
    ({}) and the new package replaces it."""
    target = manifest["target"]["name"]
    genai_provider = metadata.target_profile(manifest["target"]["provider"])["genai_provider"]
    console.say(
        f"package {target}: the current package was scored on other held-out rows or settings; "
        f"scoring it again on this run's rows before comparing (log: {display_path(log)})"
    )
    subject = EvalSubject.of(recipe, manifest, workspace)
    provider = genai_provider if provider_available(genai_provider) else None
    try:
        with output_to(log):
            return score_package(recipe, folder, subject, console, f"package {target}: current package", provider)
    except RuntimeError as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        console.say(f"package {target}: the current package does not run here ({why}): nothing to compare with")
        return {}


def _history(peft_folder: Path | None) -> list[dict[str, Any]]:
    path = peft_folder / TRAINING_LOG if peft_folder else None
    return json.loads(path.read_text(encoding="utf-8")) if path and path.is_file() else []


def show(evaluation: dict[str, Any], console: Console) -> None:
    """The evaluation as a few console tables."""
    base, adapters = evaluation["base"], evaluation["adapters"]
    shown = {m: metric_label(m, evaluation.get("normalize")) for entry in adapters.values() for m in entry["metrics"]}
    width = max([16, *(len(text) + 2 for text in shown.values())])
    console.detail(f"{'adapter':<14}{'metric':<{width}}{'base':>8}{'adapter':>9}{'rows':>6}")
    for name, entry in adapters.items():
        for metric, value in entry["metrics"].items():
            before = base["metrics"][f"{name}/{metric}"]
            console.detail(f"{name:<14}{shown[metric]:<{width}}{before:>8.3f}{value:>9.3f}{entry['rows']:>6}")
    console.detail(f"{'perplexity':<30}{'pytorch':>11}{'onnx':>11}")
    rows = [("base (pooled)", base["perplexity"]), *[(name, entry["perplexity"]) for name, entry in adapters.items()]]
    for label, ppl in rows:
        torch = f"{ppl['pytorch']:.4f}" if ppl["pytorch"] else "-"
        console.detail(f"{label:<30}{torch:>11}{ppl['onnx']:>11.4f}")
    console.detail(f"parity: {parity_text(evaluation['parity'])}")
    speeds = [("base", base), *adapters.items()]
    console.detail(
        "decode: " + ", ".join(f"{label} {entry['decode_tokens_per_s']:.1f} tok/s" for label, entry in speeds)
    )


def package_recipe(package: Path, overrides: list[str] | None = None) -> Recipe:
    """The recipe a package was built from (its recipe.json), with ``evaluation.*`` overrides applied:
    what evaluating the package again needs, whatever the recipe file says today."""
    from olive_flows.recipe.read import apply_overrides
    from olive_flows.recipe.source import SourceMap
    from olive_flows.validate.schema import schema_problems, with_defaults

    resolved = json.loads((package / RESOLVED_RECIPE).read_text(encoding="utf-8"))
    for *parents, key in RETIRED_FIELDS:  # a package built by an earlier olive-flows still evaluates
        folder = resolved
        for part in parents:
            folder = folder.get(part, {})
        folder.pop(key, None)
    evaluation = [o for o in overrides or [] if o.startswith("evaluation.")]
    smap = SourceMap()
    data = apply_overrides(resolved, smap, evaluation)
    # (the resolved recipe has its defaults filled in, which the schema's either-or rules refuse)
    problems = [p for p in schema_problems(data, smap, Location("command line")) if p.field.startswith("evaluation")]
    if problems:  # an override the schema refuses (a string for a number, say) stops here, not mid-evaluation
        raise UserError(problems)
    data = with_defaults(data)
    return Recipe(data, data, display_path(package / RESOLVED_RECIPE), SourceMap())
