"""YAML parsing that remembers where every key and value came from.

PyYAML's ``safe_load`` throws positions away and lets a repeated key silently win. Recipes are
edited by hand, so every later error must point at a line, and a duplicated key is a mistake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from olive_flows.problems import Location, Problem, UserError, field_path

Path_ = tuple  # a field path: keys and list indexes from the document root


@dataclass
class SourceMap:
    """Locations of values and of mapping keys, by field path."""

    values: dict[Path_, Location] = field(default_factory=dict)
    keys: dict[Path_, Location] = field(default_factory=dict)
    ends: dict[Path_, Location] = field(default_factory=dict)  # where scalar values end

    def locate(self, path: Path_, *, key: bool = False, fallback: Location) -> Location:
        """The location of ``path`` (its key when ``key``), else of its nearest located parent."""
        table = self.keys if key else self.values
        if path in table:
            return table[path]
        for end in range(len(path) - 1, -1, -1):
            if path[:end] in self.values:
                return self.values[path[:end]]
        return fallback

    def update(self, other: SourceMap) -> None:
        """Add ``other``'s locations, replacing those of the same paths."""
        self.values.update(other.values)
        self.keys.update(other.keys)
        self.ends.update(other.ends)

    def forget(self, prefix: Path_) -> None:
        """Drop every location at or under ``prefix`` (the value there was replaced or removed)."""
        for table in (self.values, self.keys, self.ends):
            for path in [p for p in table if p[: len(prefix)] == prefix]:
                del table[path]


def _location(source: str, mark: yaml.Mark | None) -> Location:
    if mark is None:
        return Location(source)
    return Location(source, mark.line + 1, mark.column + 1)


def parse_yaml(text: str, source: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document safely, returning the data and where each part of it came from.

    Raises UserError for syntax errors, duplicate keys and non-string keys, all at once.
    """
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, found before parsing
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        message = f"invalid YAML: character {exc.character:#06x} is not allowed in YAML"
        raise UserError([Problem(Location(source, line, column), "", message)]) from None
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        message = f"invalid YAML: {getattr(exc, 'problem', None) or exc}"
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark and context_mark is not mark:
            message += f" ({context} started at line {context_mark.line + 1}, column {context_mark.column + 1})"
        raise UserError([Problem(_location(source, mark), "", message)]) from None
    try:
        smap = SourceMap()
        problems: list[Problem] = []
        data = _build(loader, node, (), smap, problems, source) if node is not None else None
    except yaml.YAMLError as exc:  # e.g. a tag safe loading refuses: !!python/object, unknown tags
        mark = getattr(exc, "problem_mark", None)
        raise UserError(
            [Problem(_location(source, mark), "", f"invalid YAML: {getattr(exc, 'problem', exc)}")]
        ) from None
    finally:
        loader.dispose()
    if problems:
        raise UserError(problems)
    return data, smap


def _build(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, smap: SourceMap, problems: list, source: str):
    smap.values[path] = _location(source, node.start_mark)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<: *anchor)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            key_loc = _location(source, key_node.start_mark)
            if not isinstance(key, str):
                problems.append(Problem(key_loc, field_path(path), f"keys must be strings, found {key!r}"))
                continue
            if key in result:
                first = smap.keys[(*path, key)]
                problems.append(
                    Problem(
                        key_loc, field_path((*path, key)), f"duplicate key '{key}' (first set on line {first.line})"
                    )
                )
                continue
            smap.keys[(*path, key)] = key_loc
            result[key] = _build(loader, value_node, (*path, key), smap, problems, source)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*path, i), smap, problems, source) for i, item in enumerate(node.value)]
    smap.ends[path] = _location(source, node.end_mark)
    return loader.construct_object(node, deep=True)
