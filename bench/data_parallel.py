"""Training with one process and with several: ``olive-flows run quickstart --processes N``, side by side.

Each run trains the quickstart's contacts adapter for the same number of steps with the same
per-process batch, so N processes train N times the rows. The figure is training tokens per second
(the trainer's samples per second, across all processes, times the mean tokens per row) and its
ratio to one process. On a 2-core CPU two processes share the cores (one thread each): the point
there is that it works and what it costs; on a machine with GPUs run it with one process per GPU.

    .venv/bin/python bench/data_parallel.py [--processes 1 2] [--steps 24]

adds ``data_parallel`` to bench/results.json (``make bench`` runs it too).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ADAPTER = "contacts"


def run_seconds(processes: int, steps: int, out: Path, recipe: str = "quickstart") -> dict[str, Any]:
    """One run of the quickstart (its contacts adapter only) with ``processes`` processes; ``recipe``:
    another recipe that has the quickstart's contacts adapter and cpu target (the tests' tiny one)."""
    command = [
        sys.executable, "-m", "olive_flows", "run", recipe,
        f"output.dir={out}", f"adapters.{ADAPTER}.training.max_steps={steps}", f"targets.cpu.adapters=[{ADAPTER}]",
        "evaluation.max_rows=4", "--offline",
    ]  # fmt: skip
    if processes > 1:
        command += ["--processes", str(processes)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    root = out / "quickstart"  # the recipe's name
    summary = json.loads((root / "_peft" / ADAPTER / "training_log.json").read_text(encoding="utf-8"))[-1]
    (stats_file,) = (root / "_work" / "data").glob(f"{ADAPTER}-*/stats-{ADAPTER}-*.json")
    stats = json.loads(stats_file.read_text(encoding="utf-8"))
    tokens_per_row = stats["tokens"] / stats["examples"]
    return {
        "train_runtime_s": summary["train_runtime"],
        "rows_per_s": summary["train_samples_per_second"],
        "tokens_per_s": round(summary["train_samples_per_second"] * tokens_per_row, 1),
    }


def data_parallel_figures(processes: list[int], steps: int, say=print, recipe: str = "quickstart") -> dict[str, Any]:
    figures: dict[str, Any] = {"steps": steps, "adapter": ADAPTER, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for count in processes:
            say(f"data parallel: {count} process(es), {steps} steps")
            figures["runs"][str(count)] = run_seconds(count, steps, Path(tmp) / f"p{count}", recipe)
    base = figures["runs"][str(processes[0])]["tokens_per_s"]
    for run in figures["runs"].values():
        run["vs_one_process"] = round(run["tokens_per_s"] / base, 3)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=24)
    args = parser.parse_args()
    figures = data_parallel_figures(args.processes, args.steps)
    results_file = BENCH / "results.json"
    results = json.loads(results_file.read_text(encoding="utf-8")) if results_file.is_file() else {}
    results["data_parallel"] = figures
    results_file.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
