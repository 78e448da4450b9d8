"""Evaluate a package: did each adapter help, and does the package behave like the trained model?

For the base model and each adapter, on the adapter's held-out rows: the task metrics the recipe
declares (greedy answers from the exported package), perplexity on the PyTorch model with its
PEFT adapter and on the package, a parity check between the two, decode speed, and generation
samples side by side. The result is the content of eval.json.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from olive_flows.console import Console, Progress
from olive_flows.data.formats import split_chat
from olive_flows.data.prepare import scored_split
from olive_flows.data.tokenize import Encoded
from olive_flows.evaluate.metrics import score, settled
from olive_flows.evaluate.perplexity import (
    NLL,
    Agreement,
    PackageScorer,
    PyTorchScorer,
    examples,
    nll_and_agreement,
    scored_positions,
    token_nll,
)
from olive_flows.evaluate.runtime import PackageRuntime
from olive_flows.evaluate.speed import decode_speed
from olive_flows.files import read_jsonl
from olive_flows.layout import Workspace, adapter_files
from olive_flows.paths import display_path
from olive_flows.problems import UserError
from olive_flows.recipe.model import Recipe
from olive_flows.recipe.views import Evaluation, Parity

SAMPLES_PER_DATASET = 2
TORCH_BATCH = 16
SPEED_REPEATS = 3  # decode speed is the median of this many runs
# The evaluation settings that change what the scores are (which rows, the answers, how they are
# judged); the others (speed, samples, parity bounds, the PyTorch side) leave them as they are.
SCORING_SETTINGS = ("datasets", "max_rows", "max_new_tokens", "batch_size", "metrics", "normalize")


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
            split = scored_split(json.loads((audit / "stats.json").read_text(encoding="utf-8"))["rows"])
            rows[adapter] = read_jsonl(audit / f"{split}.jsonl", recipe.spec.evaluation.max_rows)
        return cls(
            rows=rows,
            dataset_of={a: manifest["adapters"][a]["dataset"]["name"] for a in adapters},
            precision=manifest["target"]["precision"],
            peft={a: workspace.peft(a) for a in adapters if workspace.peft(a).is_dir()},
            model_path=manifest["base_model"].get("path"),
            trust_remote_code=recipe.spec.model.trust_remote_code,
        )


# The answers the task metrics scored, by adapter (None: the base) and prompt tokens: the report's
# samples show the same answers where their prompts are held-out rows.
Answered = dict[tuple[str | None, tuple[int, ...]], str]


def _answers(
    runtime: PackageRuntime,
    jobs: list[tuple[list[dict], Scored, Sequence[str]]],
    adapter: str | None,
    settings: Evaluation,
    progress: Progress,
    answered: Answered,
) -> tuple[list[list[str]], int]:
    """The package's greedy answers to each job's rows (held-out rows, how they scored and the
    metrics they are scored on), and how many were read whole off the scoring pass (``greedy_start``).
    An answer is cut where its metrics are ``settled``, often already by the tokens scoring shows:
    its scores are those of the whole answer, and only whole answers go into ``answered``. The rest
    of every job is generated together, so that prompts of one length from several datasets share a
    batch."""
    chats = [[split_chat(row) for row in rows] for rows, _, _ in jobs]  # (prompt messages, reference) per row
    tokens = [[runtime.prompt_tokens(messages) for messages, _ in job] for job in chats]
    stop = set(runtime.tokenizer.eos_token_ids)
    answers: dict[tuple[int, int], str] = {}
    cut: set[tuple[int, int]] = set()

    def ends(key: tuple[int, int], text: str) -> bool:
        job, index = key
        if done := settled(jobs[job][2], text, chats[job][index][1], settings.normalize):
            cut.add(key)
        return done

    for job, (_, scored, _) in enumerate(jobs):
        for index, prompt in enumerate(tokens[job]):
            start, whole = greedy_start(
                prompt, scored.examples[index], scored.top[index], stop, settings.max_new_tokens
            )
            text = runtime.text(start)
            if whole or ends((job, index), text):
                answers[job, index] = text
    shown = len(answers) - len(cut)
    progress.update(len(answers))
    left = [(job, index) for job, prompts in enumerate(tokens) for index in range(len(prompts))]
    left = [key for key in left if key not in answers]
    prompts = [tokens[job][index] for job, index in left]
    batches = runtime.answer_batches(
        prompts, adapter, settings.max_new_tokens, settings.batch_size, lambda i, text: ends(left[i], text)
    )
    for batch in batches:
        answers.update({left[i]: answer for i, answer in batch.items()})
        progress.update(len(batch))
    complete = {key: answer for key, answer in answers.items() if key not in cut}
    answered.update({(adapter, tuple(tokens[job][index])): answer for (job, index), answer in complete.items()})
    return [[answers[job, index] for index in range(len(prompts))] for job, prompts in enumerate(tokens)], shown


def _task_scores(
    rows: list[dict], answers: list[str], metrics: Sequence[str], settings: Evaluation
) -> dict[str, float]:
    """The task metrics of ``answers`` to ``rows``, as generated: evaluation.normalize decides what
    exact_match and contains ignore."""
    references = [split_chat(row)[1] for row in rows]
    return {m: round(score(m, answers, references, settings.normalize), 4) for m in metrics}


def greedy_start(
    prompt: list[int], example: Encoded, top: np.ndarray, stop: set[int], max_new_tokens: int
) -> tuple[list[int], bool]:
    """The first tokens of the package's greedy answer to ``prompt`` that scoring ``example`` shows,
    and whether they are the whole answer.

    Scoring feeds the package the prompt followed by the reference answer. Where the package's top
    token (``top``, at the example's scored positions) after the prompt and after each answer token
    is the reference's next one, greedy decoding would produce the reference's tokens, until an
    end-of-sequence token is the top one or ``max_new_tokens`` are out: the check speculative
    decoding makes of a draft, with the reference as the draft. The first top token that is not the
    reference's is greedy decoding's too; what follows it scoring does not show. A tuned adapter
    mostly gets its whole answer this way and skips its generation (eval.json: answers_from_scoring)."""
    ids = example.input_ids
    if ids[: len(prompt)] != prompt:
        return [], False
    at = {int(position): index for index, position in enumerate(scored_positions(example))}
    answer: list[int] = []
    for position in range(len(prompt) - 1, len(ids) - 1):
        if position not in at:
            break
        token = int(top[at[position]])
        if token in stop:
            return answer, True
        answer.append(token)
        if len(answer) == max_new_tokens:
            return answer, True
        if token != ids[position + 1]:
            break
    return answer, False  # the reference ends (truncated) before the answer does, or scoring shows no more


@dataclass
class Scores:
    """Rows scored on the package and, when the PyTorch side is there, on PyTorch side by side."""

    onnx: NLL = field(default_factory=NLL)
    torch: NLL | None = None
    agreement: Agreement | None = None
    max_abs_logit_diff: float = 0.0

    @classmethod
    def none(cls, pytorch: bool) -> Scores:
        """Nothing scored yet, with (``pytorch``) or without the PyTorch side."""
        return cls(NLL(), NLL() if pytorch else None, Agreement() if pytorch else None)

    def add(self, other: Scores) -> Scores:
        both = self.torch is not None and other.torch is not None
        return Scores(
            self.onnx.add(other.onnx),
            self.torch.add(other.torch) if both else None,
            self.agreement.add(other.agreement) if both else None,
            max(self.max_abs_logit_diff, other.max_abs_logit_diff),
        )


@dataclass
class Scored:
    """The scores of rows and what the package's top token was at each row's scored positions."""

    scores: Scores
    examples: list[Encoded]
    top: list[np.ndarray]


def _score(
    runtime: PackageRuntime,
    scorer: PyTorchScorer | None,
    encoded: list[Encoded],
    adapter: str | None,
    progress: Progress,
) -> Scored:
    """Perplexity of ``encoded`` on the package and (with ``scorer``) on PyTorch, and how the two
    distributions agree, each row's two logits compared as they come. Rows go in token order, where
    neighbours share the longest prefixes (``PackageScorer``, ``PyTorchScorer.batch_logits``)."""
    order = sorted(range(len(encoded)), key=lambda i: encoded[i].input_ids)
    package = PackageScorer(runtime, adapter, max((len(e.input_ids) for e in encoded), default=0) + 1)
    top: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(encoded)
    scores = Scores.none(pytorch=scorer is not None)
    for start in range(0, len(order), TORCH_BATCH):
        batch = order[start : start + TORCH_BATCH]
        references = scorer.batch_logits([encoded[i] for i in batch], adapter) if scorer else [None] * len(batch)
        for index, reference in zip(batch, references, strict=True):
            example = encoded[index]
            logits = package.logits(example)
            top[index] = logits.argmax(axis=-1)
            if reference is None:
                scored = Scores(token_nll(logits, example))
            else:
                diff = float(np.abs(reference - logits).max()) if len(logits) else 0.0
                scored = Scores(*nll_and_agreement(reference, logits, example), diff)
            scores = scores.add(scored)
        progress.update((2 if scorer else 1) * len(batch))
    return Scored(scores, encoded, top)


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

    result: dict[str, Any] = {"base": {"metrics": {}, "perplexity_by_adapter": {}}, "adapters": {}}
    result["normalize"] = list(settings.normalize)  # how exact_match and contains compared
    base_jobs: dict[str, tuple[list[dict], Scored, Sequence[str]]] = {}  # dataset -> rows, base scores, metrics
    base_total = Scores.none(pytorch=scorer is not None)
    compared: dict[str, Scores] = {}
    answered: Answered = {}
    for adapter in adapters:
        training = spec.adapters[adapter].training
        dataset = subject.dataset_of[adapter]
        rows = subject.rows[adapter]
        metrics = settings.metrics.get(dataset, ())
        entry: dict[str, Any] = {"dataset": dataset, "rows": len(rows), "metrics": {}}
        encoded = examples(tokenizer, rows, training.max_seq_len, training.loss_on)
        tuned = _score(runtime, scorer, encoded, adapter, progress)
        base = _score(runtime, scorer, encoded, None, progress)
        if metrics:
            base_jobs.setdefault(dataset, (rows, base, metrics))
            [answers], entry["answers_from_scoring"] = _answers(
                runtime, [(rows, tuned, metrics)], adapter, settings, progress, answered
            )
            entry["metrics"] = _task_scores(rows, answers, metrics, settings)
        entry["perplexity"] = _perplexity(tuned.scores.onnx, tuned.scores.torch)
        result["base"]["perplexity_by_adapter"][adapter] = _perplexity(base.scores.onnx, base.scores.torch)
        base_total = base_total.add(base.scores)
        compared[adapter] = tuned.scores
        result["adapters"][adapter] = entry
    # the base's answers to every dataset at once: prompts of one length share a batch across datasets
    answers, result["base"]["answers_from_scoring"] = _answers(
        runtime, list(base_jobs.values()), None, settings, progress, answered
    )
    base_answers = dict(zip(base_jobs, answers, strict=True))
    for adapter in adapters:
        dataset = subject.dataset_of[adapter]
        if dataset in base_answers:
            metrics = _task_scores(base_jobs[dataset][0], base_answers[dataset], settings.metrics[dataset], settings)
            result["base"]["metrics"].update({f"{adapter}/{m}": v for m, v in metrics.items()})
    result["base"]["perplexity"] = _perplexity(base_total.onnx, base_total.torch)
    result["parity"] = _parity({"base": base_total, **compared}, subject.precision, settings.parity)

    prompt = [{"role": "user", "content": settings.smoke_prompt}]
    for adapter in [None, *adapters]:
        speed = decode_speed(runtime, prompt, adapter, settings.decode_tokens, repeats=SPEED_REPEATS)
        progress.update(SPEED_REPEATS)
        target = result["base"] if adapter is None else result["adapters"][adapter]
        target["decode_tokens_per_s"] = speed["tokens_per_s"]
        target["time_to_first_token_s"] = speed["time_to_first_token_s"]
    result["samples"] = _samples(runtime, samples, adapters, settings, progress, answered)
    result["sizes_mb"] = _sizes(folder)
    result["basis"] = scoring_basis(recipe, subject, adapters)
    progress.close()
    return result


def scoring_basis(recipe: Recipe, subject: EvalSubject, adapters: list[str]) -> str:
    """A fingerprint of what the scores were measured on: each adapter's held-out rows, how they
    were encoded, and the scoring settings. Two eval.json files with the same basis compare like
    with like; promote.when: better scores the current package again where they differ."""
    evaluation = recipe.data["evaluation"]
    basis = {
        "settings": {name: evaluation.get(name) for name in SCORING_SETTINGS},
        "adapters": {
            adapter: {
                "dataset": subject.dataset_of[adapter],
                "rows": subject.rows[adapter],
                "max_seq_len": recipe.spec.adapters[adapter].training.max_seq_len,
                "loss_on": recipe.spec.adapters[adapter].training.loss_on,
            }
            for adapter in adapters
        },
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def score_package(
    recipe: Recipe, folder: Path, subject: EvalSubject, console: Console, label: str, provider: str | None = None
) -> dict[str, Any]:
    """The package in ``folder`` scored on ``subject``'s rows, the package alone (no PyTorch side):
    how two packages are put on the same rows (compare --rescore, promote.when: better)."""
    runtime = PackageRuntime(folder, provider)
    adapters = [name for name in runtime.adapter_names if name in subject.rows]
    own = replace(subject, rows={name: subject.rows[name] for name in adapters}, peft={}, model_path=None)
    return evaluate_package(recipe, folder, own, runtime, console, label)


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


def _parity(compared: dict[str, Scores], precision: str, settings: Parity) -> dict[str, Any]:
    """How closely the package follows the PyTorch model (PEFT adapters unmerged, fp32) on the held-out
    rows, for the base and each adapter: the mean KL divergence per scored token and top-1 agreement
    where PyTorch is confident, against the recipe's bounds; an fp32 package's logits at the scored
    tokens must also match within ``fp32_logit_tolerance``. The perplexity difference is reported
    beside them, in nats."""
    if any(scores.agreement is None for scores in compared.values()):
        return {"checked": False, "reason": "no PyTorch side (evaluation.pytorch is off, or PEFT adapters are missing)"}
    by: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for name, scores in compared.items():
        kl, top1 = scores.agreement.kl, scores.agreement.top1
        nll = (scores.onnx.total - scores.torch.total) / scores.onnx.tokens if scores.onnx.tokens else None
        by[name] = {
            "kl_nats": _round(kl, 6),
            "top1_agreement": _round(top1),
            "confident_tokens": scores.agreement.confident,
            "tokens": scores.agreement.tokens,
            "loss_difference_nats": _round(nll, 6),
            "max_abs_logit_diff": float(f"{scores.max_abs_logit_diff:.3g}"),  # fp32: well below 1e-6
        }
        if kl is not None and kl > settings.max_kl:
            failures.append(f"{name}: KL divergence {kl:.4g} nats per token, bound {settings.max_kl:g}")
        if top1 is not None and top1 < settings.min_top1_agreement:
            failures.append(
                f"{name}: top-1 agreement {top1:.1%} where PyTorch is confident, bound {settings.min_top1_agreement:.0%}"
            )
        if precision == "fp32" and scores.max_abs_logit_diff > settings.fp32_logit_tolerance:
            failures.append(
                f"{name}: largest logit difference {scores.max_abs_logit_diff:.3g}, tolerance {settings.fp32_logit_tolerance:g}"
            )
    bounds = {"max_kl": settings.max_kl, "min_top1_agreement": settings.min_top1_agreement}
    if precision == "fp32":
        bounds["fp32_logit_tolerance"] = settings.fp32_logit_tolerance
    return {
        "checked": True,
        "by": by,
        "bounds": bounds,
        "ok": not failures,
        "failures": failures,
        "enforced": settings.enforce,
    }


def parity_text(parity: dict[str, Any]) -> str:
    """One line on parity: the worst KL and top-1 agreement against their bounds, and the verdict."""
    if not parity.get("checked"):
        return f"not checked: {parity['reason']}"
    if parity["failures"]:
        verdict = "BROKEN: " + "; ".join(parity["failures"])
        return verdict + ("" if parity["enforced"] else " (not enforced: evaluation.parity.enforce is false)")
    by, bounds = parity["by"], parity["bounds"]
    kl = max(by.items(), key=lambda kv: kv[1]["kl_nats"] or 0)
    agreed = [(n, e["top1_agreement"]) for n, e in by.items() if e["top1_agreement"] is not None]
    text = f"KL divergence at most {kl[1]['kl_nats']:.2g} nats per token ({kl[0]}; bound {bounds['max_kl']:g})"
    if agreed:
        worst = min(agreed, key=lambda kv: kv[1])
        text += f", top-1 agreement at least {worst[1]:.1%} ({worst[0]}; bound {bounds['min_top1_agreement']:.0%})"
    if "fp32_logit_tolerance" in bounds:
        largest = max(e["max_abs_logit_diff"] for e in by.values())
        text += f", largest logit difference {largest:.2g} (tolerance {bounds['fp32_logit_tolerance']:g})"
    return text + (": OK" if parity["enforced"] else ": OK (not enforced: evaluation.parity.enforce is false)")


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
    answered: Answered,
) -> list[dict[str, str]]:
    samples = []
    for messages in prompts:
        sample = {"prompt": messages[-1]["content"]}
        tokens = tuple(runtime.prompt_tokens(messages))
        for adapter in [None, *adapters]:
            answer = answered.get((adapter, tokens))
            if answer is None:
                answer = runtime.generate(messages, adapter, settings.max_new_tokens)
            sample[adapter or "base"] = answer.strip()
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
