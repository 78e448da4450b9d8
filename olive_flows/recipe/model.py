"""The Recipe object: a validated recipe with its defaults filled in, and where each value came from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olive_flows.recipe.source import SourceMap
from olive_flows.validate.problems import Location, Problem, field_path


@dataclass
class Recipe:
    """A recipe after parsing: ``data`` has every schema default filled in, ``raw`` is as written."""

    data: dict[str, Any]
    raw: dict[str, Any]
    source: str
    base_dir: Path
    source_map: SourceMap

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def datasets(self) -> dict[str, dict[str, Any]]:
        return self.data["datasets"]

    @property
    def adapters(self) -> dict[str, dict[str, Any]]:
        return self.data["adapters"]

    @property
    def targets(self) -> dict[str, dict[str, Any]]:
        return self.data["targets"]

    def dataset_file(self, name: str) -> Path:
        """The data file of dataset ``name``; relative paths are relative to the recipe file."""
        return (self.base_dir / self.datasets[name]["path"]).resolve()

    def target_adapters(self, target: str) -> list[str]:
        """Adapters shipped in ``target``'s package, in recipe order."""
        chosen = self.targets[target].get("adapters")
        return list(chosen) if chosen else list(self.adapters)

    def location(self, path: tuple, *, key: bool = False) -> Location:
        """Where the value (or with ``key``, the key) at ``path`` was written."""
        return self.source_map.locate(path, key=key, fallback=Location(self.source))

    def problem(self, path: tuple, message: str, hint: str | None = None, *, key: bool = False) -> Problem:
        """A Problem about the field at ``path``, located where that field was written."""
        return Problem(self.location(path, key=key), field_path(path), message, hint)
