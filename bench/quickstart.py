"""The quickstart as a new user meets it: `make finetune` in a fresh clone, timed stage by stage.

Clones this repository's last commit into a temporary folder and runs `make setup` there (a new
.venv, installed from the package registry) and then `make finetune`, with an empty model cache. It
writes bench/quickstart.json: the wall time of both commands, the run's own stages (its
timings.json), what evaluation takes of the whole, and the package's eval.json. The README's
quickstart figures are generated from that file (`make docs`), and `make bench`'s RESULTS.md shows
the time by stage.

    .venv/bin/python bench/quickstart.py      (about 10 minutes on 2 cores)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from run import machine

BENCH = Path(__file__).parent
REPO = BENCH.parent
OUTPUT = BENCH / "quickstart.json"


def timed(command: list[str], folder: Path, env: dict[str, str], log: Path) -> float:
    """Wall time of ``command`` run in ``folder``; its output goes to ``log``, shown when it fails."""
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as output:
        done = subprocess.run(command, cwd=folder, env=env, stdout=output, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(
            f"{' '.join(command)} failed with exit code {done.returncode}:\n{log.read_text(encoding='utf-8')[-4000:]}"
        )
    return time.perf_counter() - started


def fresh_clone_run(work: Path) -> dict[str, Any]:
    """`make setup` and `make finetune` in a fresh clone of HEAD under ``work``, with an empty model cache."""
    clone = work / "olive-flows"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    env["OLIVE_FLOWS_CACHE"] = str(work / "model-cache")
    setup_s = timed(["make", "setup"], clone, env, work / "setup.log")
    finetune_s = timed(["make", "finetune"], clone, env, work / "finetune.log")
    stages = json.loads(
        next((clone / "outputs" / "quickstart" / "_work" / "runs").glob("*/timings.json")).read_text(encoding="utf-8")
    )
    package = clone / "outputs" / "quickstart" / "cpu"
    manifest = json.loads((package / "manifest.json").read_text(encoding="utf-8"))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True)
    evaluated = sum(seconds for stage, seconds in stages.items() if stage.startswith("evaluate "))
    return {
        "machine": machine(),
        "commit": commit.stdout.strip(),
        "versions": manifest["versions"],
        "setup_s": round(setup_s, 1),
        "finetune_s": round(finetune_s, 1),
        "stages_s": stages,
        # process start, imports, validation and the data check before the first stage
        "outside_stages_s": round(finetune_s - sum(stages.values()), 1),
        "eval_share": round(evaluated / finetune_s, 3),
        "eval": json.loads((package / "eval.json").read_text(encoding="utf-8")),
    }


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        result = fresh_clone_run(Path(tmp))
    OUTPUT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "eval"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
