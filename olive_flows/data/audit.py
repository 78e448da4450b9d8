"""The audit trail of a run: the exact rows each adapter trained and was evaluated on, with stats.

Written to ``<output.dir>/<recipe>/_data/<adapter>/`` beside the packages: the split files the
adapter's training read, and stats.json with what happened to the rows on the way (invalid rows
skipped, rating filter, cleaning, rows truncated or dropped at tokenization, by index into
train.jsonl) and the sha256 of each file. manifest.json records the same hashes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from olive_flows.data.prepare import SPLITS, PreparedDataset
from olive_flows.files import replace_dir, sha256_file, staging_dir, write_json


def tokenization_stats(stats_path: str | Path | None) -> dict[str, Any]:
    """What the tokenization of a training run reported (empty when it has not run, or when nothing
    was trained: an adapter trained elsewhere)."""
    path = Path(stats_path) if stats_path else None
    return json.loads(path.read_text(encoding="utf-8")) if path and path.is_file() else {}


def write_audit(folder: Path, data: PreparedDataset, stats: dict[str, Any]) -> dict[str, str]:
    """Write one adapter's audit folder atomically; return the sha256 of each split file."""
    staging = staging_dir(folder)
    staging.mkdir()
    hashes = {}
    for split in SPLITS:
        source = data.folder / f"{split}.jsonl"
        shutil.copy2(source, staging / source.name)
        hashes[source.name] = sha256_file(source)
    write_json(
        staging / "stats.json",
        {
            "dataset": data.name,
            "source": data.source,
            "format": data.format,
            "rows": data.rows,
            "preparation": data.report.to_json(),
            "tokenization": stats,
            "sha256": hashes,
        },
    )
    replace_dir(staging, folder)
    return hashes
