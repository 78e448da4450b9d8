"""The trained PEFT adapters, kept beside the packages for PyTorch use, evaluation and parity checks.

Olive keeps the adapter a LoRA pass trained in its cache; the job's footprint says where. Each run
copies it to ``<output.dir>/<recipe>/_peft/<adapter>/`` with the training log of the run that
trained it (the log is stored beside the cached adapter, so a cache hit finds the right one).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from olive_flows.files import replace_dir, staging_dir, write_json
from olive_flows.layout import TRAINING_LOG


def trained_adapter(job_output: Path) -> Path | None:
    """The PEFT adapter folder the workflow in ``job_output`` trained, from Olive's footprint."""
    footprint = job_output / "footprint.json"
    if not footprint.is_file():
        return None
    for node in json.loads(footprint.read_text(encoding="utf-8")).values():
        path = ((node.get("model_config_data") or {}).get("config") or {}).get("adapter_path")
        if path and Path(path).is_dir():
            return Path(path)
    return None


def record_history(adapter_dir: Path, history: list[dict[str, Any]]) -> None:
    """Keep the training log beside the adapter it produced."""
    write_json(adapter_dir / TRAINING_LOG, history)


def publish(adapter_dir: Path, destination: Path) -> None:
    """Copy a PEFT adapter folder to ``destination`` (atomically)."""
    staging = staging_dir(destination)
    shutil.copytree(adapter_dir, staging)
    replace_dir(staging, destination)
