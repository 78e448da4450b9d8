"""Earlier packages of a target: kept when a run replaces one (``output.keep_versions``), listed by
``olive-flows versions``.

A version is the whole package folder, moved (not copied) out of the way before the new one takes
its place, named by when it was built and the fingerprint of its inputs, so the names sort by age.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olive_flows.files import replace_dir
from olive_flows.layout import EVAL, MANIFEST, is_package


@dataclass(frozen=True)
class Version:
    """One package, current or kept: where it is and what its manifest and eval.json say."""

    folder: Path
    label: str  # "current" or the version folder's name
    built: float
    manifest: dict[str, Any]
    scores: dict[str, Any]

    @classmethod
    def of(cls, folder: Path, label: str) -> Version:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        return cls(folder, label, (folder / MANIFEST).stat().st_mtime, manifest, read_scores(folder) or {})

    @property
    def size_mb(self) -> float:
        return sum(entry["size"] for entry in self.manifest.get("files", {}).values()) / 1e6

    def headline(self) -> dict[str, float]:
        """Each adapter's task metrics as ``adapter/metric``, and the base's perplexity."""
        found = {
            f"{adapter}/{metric}": value
            for adapter, entry in self.scores.get("adapters", {}).items()
            for metric, value in entry.get("metrics", {}).items()
        }
        perplexity = self.scores.get("base", {}).get("perplexity")
        if perplexity:  # measured by onnxruntime (and by PyTorch beside it, for parity)
            found["base/perplexity"] = perplexity["onnx"] if isinstance(perplexity, dict) else perplexity
        return found


def read_scores(package: Path) -> dict[str, Any] | None:
    """A package's eval.json, or None when there is no package or it was not evaluated."""
    scores_file = package / EVAL
    return (
        json.loads(scores_file.read_text(encoding="utf-8")) if is_package(package) and scores_file.is_file() else None
    )


def version_name(package: Path) -> str:
    """``<built, UTC>-<first 8 of the inputs fingerprint>`` of a package."""
    manifest = json.loads((package / MANIFEST).read_text(encoding="utf-8"))
    built = time.strftime("%Y%m%d-%H%M%S", time.gmtime((package / MANIFEST).stat().st_mtime))
    return f"{built}-{manifest.get('inputs_sha256', '')[:8]}"


def promote(staging: Path, final: Path, versions: Path, keep: int) -> None:
    """Make the package assembled in ``staging`` the one at ``final``. The current package moves into
    ``versions`` first, where the ``keep`` newest stay (0: it is removed). If it cannot move
    (FolderInUse: on Windows a chat or server holds its files open) nothing has changed; if the new
    one cannot move in, the current one goes back. On Linux and macOS a program that has the current
    package open keeps running it from the moved folder until it loads the package again."""
    if keep == 0 or not is_package(final):
        replace_dir(staging, final)
        return
    versions.mkdir(parents=True, exist_ok=True)
    kept = versions / version_name(final)
    if kept.exists():  # rebuilt from the same inputs within the second: the newer one wins
        shutil.rmtree(kept)
    replace_dir(staging, final, kept)
    for old in sorted(p for p in versions.iterdir() if is_package(p))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def list_versions(package: Path, versions: Path) -> list[Version]:
    """The current package (when built) and the kept ones, newest first."""
    found = [Version.of(package, "current")] if is_package(package) else []
    if versions.is_dir():
        kept = sorted((p for p in versions.iterdir() if is_package(p)), reverse=True)
        found += [Version.of(p, p.name) for p in kept]
    return found
