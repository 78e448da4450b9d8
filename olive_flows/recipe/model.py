"""The Recipe object: a validated recipe with its defaults filled in, and where each value came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from olive_flows.paths import portable_path
from olive_flows.problems import Location, Problem, field_path
from olive_flows.recipe.source import SourceMap
from olive_flows.recipe.views import Spec


@dataclass
class Recipe:
    """A recipe after parsing: ``data`` has every schema default filled in, ``raw`` is as written
    (after ``extends`` and overrides). ``files`` maps each source name in the source map to the
    file it names, so relative paths resolve against the file that wrote them."""

    data: dict[str, Any]
    raw: dict[str, Any]
    source: str
    source_map: SourceMap
    files: dict[str, Path] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.data["name"]

    @cached_property
    def spec(self) -> Spec:
        """Typed views of the resolved recipe, for the steps after validation (built once)."""
        return Spec.of(self.data)

    @property
    def datasets(self) -> dict[str, dict[str, Any]]:
        return self.data["datasets"]

    @property
    def adapters(self) -> dict[str, dict[str, Any]]:
        return self.data["adapters"]

    @property
    def targets(self) -> dict[str, dict[str, Any]]:
        return self.data["targets"]

    def base_dir(self, path: tuple) -> Path:
        """The folder relative paths in the value at ``path`` are resolved from: that of the file
        that wrote it (the working directory for command-line overrides)."""
        source = self.location(path).source
        return self.files[source].parent if source in self.files else Path.cwd()

    def resolve_path(self, path: tuple) -> Path:
        """The value at ``path`` (a file or folder name) as an absolute path."""
        value = self.data
        for part in path:
            value = value[part]
        return (self.base_dir(path) / portable_path(value)).resolve()

    def data_file(self, dataset: str, key: str = "path") -> Path:
        """A dataset's ``path`` or ``eval_path`` file, relative to the recipe that named it."""
        return self.resolve_path(("datasets", dataset, key))

    def target_adapters(self, target: str) -> list[str]:
        """Adapters shipped in ``target``'s package, in recipe order."""
        chosen = self.targets[target].get("adapters")
        return list(chosen) if chosen else list(self.adapters)

    def location(self, path: tuple, *, key: bool = False) -> Location:
        """Where the value (or with ``key``, the key) at ``path`` was written."""
        return self.source_map.locate(path, key=key, fallback=Location(self.source))

    def problem(self, path: tuple, message: str, hint: str | None = None, *, key: bool = False) -> Problem:
        """An error about the field at ``path``, located where that field was written."""
        return Problem(self.location(path, key=key), field_path(path), message, hint)

    def warning(self, path: tuple, message: str, hint: str | None = None) -> Problem:
        """A warning about the field at ``path``: reported, but the recipe still runs."""
        return Problem(self.location(path), field_path(path), message, hint, severity="warning")
