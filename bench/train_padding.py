"""Training throughput: olive-flows' data handling against Olive's default, side by side.

Both runs train the same LoRA (the quickstart's contacts adapter, same rows, batch size, steps and
max_seq_len) with the compiled training pass (Olive's LoRA pass, logits only where a label is);
only the data handling differs (the data config and how batches are collated):
  * olive-flows: rows tokenized by olive-flows' Olive data component, each batch padded to its
    longest row, loss on the assistant's answer (the recipe's settings);
  * olive-flows packed: the same with training.packing: true, each batch's rows in one sequence;
  * Olive default: Olive's text-generation pre-processing with the chat template, which pads every
    row to max_seq_len and learns every token.
The quickstart's rows are all about as long (a batch of them is a few percent padding), so packing
is also measured where rows vary: the same rows joined into conversations of one to four exchanges
(MULTI_TURN_SEQ_LEN tokens at most), padded to each batch's longest and packed.
The figure is non-padding tokens trained per second (the median of --repeats runs of each).
`make bench` runs it too (bench/results.json "padding", the README's figure).

    python bench/train_padding.py [--steps 12] [--repeats 3] [--json bench/train_padding.json]
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import random
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from olive_flows.compile.plan import plan_recipe
from olive_flows.compile.workflow import Job
from olive_flows.console import Console
from olive_flows.data.prepare import PreparedDataset
from olive_flows.recipe.model import Recipe
from olive_flows.run.olive import run_workflow
from olive_flows.run.training_log import record_training
from olive_flows.validate.load import load_recipe


def olive_default_data(config: dict, max_seq_len: int) -> None:
    """Swap olive-flows' data configs for Olive's built-in text-generation pre-processing."""
    for data in config["data_configs"]:
        data.pop("user_script")
        data["pre_process_data_config"] = {
            "strategy": "line-by-line",
            "chat_template": True,
            "max_seq_len": max_seq_len,
        }


def train_seconds(config: dict, work: Path, label: str) -> float:
    """Run only the LoRA pass, in a fresh cache, and return the trainer's own train_runtime."""
    config = copy.deepcopy(config)
    config["cache_dir"] = str(work / "cache")
    config["output_dir"] = str(work / "out")
    config["passes"]["train"]["training_args"]["output_dir"] = str(work / "checkpoints")  # never resume a repeat
    with record_training(Console(io.StringIO()), label) as recorder:
        run_workflow(label, config, work / "log.txt")
    return next(e["train_runtime"] for e in recorder.history if "train_runtime" in e)


MULTI_TURN_SEQ_LEN = 512  # max_seq_len of the multi-turn rows: four exchanges fit


def multi_turn_rows(source: Path, target: Path, seed: int = 0) -> Path:
    """``source``'s chat rows joined in order into conversations of one to four exchanges (drawn
    with ``seed``), written to ``target``: rows whose lengths vary, as collected conversations do."""
    exchanges = [json.loads(line)["messages"] for line in source.read_text(encoding="utf-8").splitlines()]
    draw, rows, start = random.Random(seed), [], 0
    while start < len(exchanges):
        count = draw.randint(1, 4)
        rows.append({"messages": [m for exchange in exchanges[start : start + count] for m in exchange]})
        start += count
    target.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return target


def contacts_training(
    steps: int, work: Path, overrides: tuple[str, ...] = ()
) -> tuple[Recipe, PreparedDataset, Job, dict]:
    """The quickstart's contacts adapter (with ``overrides``) compiled into ``work`` with ``steps``
    steps, and its Olive config reduced to the training pass alone (no held-out evaluation, no export)."""
    recipe = load_recipe(
        "quickstart", [f"output.dir={work}", f"adapters.contacts.training.max_steps={steps}", *overrides]
    )
    plan = plan_recipe(recipe, Console(io.StringIO()), model_log=work / "model.log")
    job = next(j for j in plan.jobs if j.adapter == "contacts")
    config = copy.deepcopy(job.config)
    config["passes"] = {"train": config["passes"]["train"]}
    config["passes"]["train"]["eval_data_config"] = None
    config["passes"]["train"]["training_args"]["eval_strategy"] = "no"
    return recipe, plan.datasets["contacts"], job, config


def padding_figures(steps: int, repeats: int, say: Callable[[str], None]) -> dict[str, Any]:
    """The data handlings trained ``repeats`` times each, taking turns; their median non-padding
    tokens/s, on the quickstart's rows and on multi-turn rows."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        recipe, _, quickstart, ours = contacts_training(steps, work / "quickstart")
        training = recipe.adapters["contacts"]["training"]
        olive = copy.deepcopy(ours)
        olive_default_data(olive, training["max_seq_len"])
        multi_path = multi_turn_rows(
            Path(recipe.source).parent / recipe.datasets["contacts"]["path"], work / "multi.jsonl"
        )
        overrides = (
            f"datasets.contacts.path={multi_path}",
            f"adapters.contacts.training.max_seq_len={MULTI_TURN_SEQ_LEN}",
        )
        _, _, multi, multi_turn = contacts_training(steps, work / "multi-turn", overrides)

        sides = {
            "olive-flows": ours,
            "olive-flows packed": packed(ours),
            "olive-default": olive,
            "multi-turn": multi_turn,
            "multi-turn packed": packed(multi_turn),
        }
        runs: dict[str, list[float]] = {label: [] for label in sides}
        for repeat in range(repeats):
            for label, config in sides.items():
                runs[label].append(train_seconds(config, work / f"{label}-{repeat}", label))
                say(f"padding run {repeat + 1}/{repeats} {label}: {runs[label][-1]:.1f} s")
        stats = {
            name: json.loads(Path(job.stats_path).read_text(encoding="utf-8"))
            for name, job in (("quickstart", quickstart), ("multi-turn", multi))
        }

    rows = steps * training["batch_size"]  # same rows per step in every run
    per_row = {name: s["tokens"] / s["examples"] for name, s in stats.items()}
    real_tokens = {
        label: rows * per_row["multi-turn" if label.startswith("multi-turn") else "quickstart"] for label in runs
    }
    result = {
        "steps": steps,
        "repeats": repeats,
        "batch_size": training["batch_size"],
        "max_seq_len": training["max_seq_len"],
        "mean_tokens_per_row": round(per_row["quickstart"], 1),
        "multi_turn_max_seq_len": MULTI_TURN_SEQ_LEN,
        "multi_turn_mean_tokens_per_row": round(per_row["multi-turn"], 1),
        "train_seconds_median": {k: round(statistics.median(v), 2) for k, v in runs.items()},
        "non_padding_tokens_per_s": {k: round(real_tokens[k] / statistics.median(v), 1) for k, v in runs.items()},
    }
    speeds = result["non_padding_tokens_per_s"]
    result["ratio_olive_flows_vs_olive_default"] = round(speeds["olive-flows"] / speeds["olive-default"], 2)
    result["ratio_packed_vs_padded"] = round(speeds["olive-flows packed"] / speeds["olive-flows"], 2)
    result["ratio_packed_vs_padded_multi_turn"] = round(speeds["multi-turn packed"] / speeds["multi-turn"], 2)
    return result


def packed(config: dict) -> dict:
    """``config`` with training.packing: true."""
    config = copy.deepcopy(config)
    config["passes"]["train"]["packing"] = True
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()
    result = padding_figures(args.steps, args.repeats, lambda text: print(text, file=sys.stderr))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
