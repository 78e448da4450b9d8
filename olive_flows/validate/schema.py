"""Validation against schemas/recipe.schema.json, and the defaults that schema declares.

jsonschema does the validating; this module only turns its errors into Problems that name the
line, the field, what was expected and what was found, and fills in the schema's defaults so
that no default lives anywhere else.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from olive_flows.paths import SCHEMA_PATH
from olive_flows.problems import Location, Problem, did_you_mean, field_path
from olive_flows.recipe.source import SourceMap

_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}


@cache
def recipe_schema() -> dict[str, Any]:
    """The recipe JSON Schema, parsed once."""
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        return json.load(f)


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(recipe_schema())


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (keeping sibling keywords such as description)."""
    while "$ref" in schema:
        ref = schema["$ref"]
        target: Any = recipe_schema()
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def schema_problems(data: Any, smap: SourceMap, fallback: Location) -> list[Problem]:
    """Every schema violation in ``data``, one Problem each, without duplicates.

    A misspelled key is reported once: as an unknown field with a suggestion, not also as the
    required field it was meant to be.
    """
    errors = list(_validator().iter_errors(data))
    suggested = {
        (tuple(e.absolute_path), name)
        for e in errors
        if e.validator == "additionalProperties"
        for key in e.instance
        if key not in e.schema.get("properties", {})
        for name in [_suggestion(key, e.schema.get("properties", {}))]
        if name
    }
    problems: list[Problem] = []
    for error in errors:
        if error.validator == "required":
            error.validator_value = [
                k for k in error.validator_value if (tuple(error.absolute_path), k) not in suggested
            ]
        for problem in _to_problems(error, smap, fallback):
            if problem not in problems:
                problems.append(problem)
    return problems


def _suggestion(key: str, properties: dict[str, Any]) -> str | None:
    """The field an unknown key most likely meant, if any."""
    for name, sub in properties.items():
        if key in resolve(sub).get("x-aliases", ()):
            return name
    hint = did_you_mean(key, properties)
    return hint.split("'")[1] if hint else None


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    kind = _TYPE_NAMES.get(type(value), type(value).__name__)
    if isinstance(value, (dict, list)):
        return kind
    shown = json.dumps(value) if isinstance(value, str) else repr(value)
    return f"{kind} {shown}"


def _known_alias(key: str, properties: dict[str, Any]) -> str | None:
    """A hint when ``key`` is another tool's name for a field (the schema lists them as x-aliases)."""
    for name, sub in properties.items():
        if key in resolve(sub).get("x-aliases", ()):
            return f"did you mean '{name}'? (olive-flows' name for {key})"
    return None


def _to_problems(error: ValidationError, smap: SourceMap, fallback: Location) -> list[Problem]:
    path = tuple(error.absolute_path)
    where = smap.locate(path, fallback=fallback)
    name = field_path(path)
    kind, expected, value = error.validator, error.validator_value, error.instance
    custom = error.schema.get("x-message") if isinstance(error.schema, dict) else None

    if "propertyNames" in error.absolute_schema_path:
        key_path = (*path, value)
        message = custom or error.message
        return [Problem(smap.locate(key_path, key=True, fallback=where), field_path(key_path), message)]
    if kind == "additionalProperties":
        allowed = error.schema.get("properties", {})
        return [
            Problem(
                smap.locate((*path, key), key=True, fallback=where),
                field_path((*path, key)),
                "unknown field",
                _known_alias(key, allowed) or did_you_mean(key, allowed) or f"allowed fields: {', '.join(allowed)}",
            )
            for key in value
            if key not in allowed
        ]
    if kind == "required":
        return [
            Problem(where, field_path((*path, key)), "missing required field")
            for key in expected
            if isinstance(value, dict) and key not in value
        ]
    if kind == "enum":
        options = ", ".join("null" if o is None else str(o) for o in expected)
        hint = did_you_mean(value, [str(o) for o in expected]) if isinstance(value, str) else None
        return [Problem(where, name, f"expected one of {options}; found {_describe(value)}", hint)]
    if kind == "const":
        return [Problem(where, name, f"expected {expected!r}; found {_describe(value)}")]
    if kind == "type":
        wanted = " or ".join(expected) if isinstance(expected, list) else expected
        return [Problem(where, name, f"expected {wanted}; found {_describe(value)}")]
    if kind in {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}:
        relation = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        return [Problem(where, name, f"must be {relation} {expected}; found {_describe(value)}")]
    if kind == "not":
        return [Problem(where, name, error.schema.get("x-not-message", error.message))]
    if kind in {"minProperties", "minItems"}:
        return [Problem(where, name, f"must not be empty (at least {expected})")]
    if custom:
        return [Problem(where, name, f"{custom}; found {_describe(value)}")]
    return [Problem(where, name, error.message)]


def with_defaults(data: Any) -> Any:
    """Return a copy of ``data`` with every default of the schema filled in where a field is absent."""
    data = copy.deepcopy(data)
    _fill(data, recipe_schema())
    return data


def _fill(data: Any, schema: dict[str, Any]) -> None:
    schema = resolve(schema)
    if isinstance(data, dict):
        properties = schema.get("properties", {})
        for key, sub in properties.items():
            sub = resolve(sub)
            if key not in data and "default" in sub:
                data[key] = copy.deepcopy(sub["default"])
            if key in data:
                _fill(data[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in data.items():
                if key not in properties:
                    _fill(value, extra)
    elif isinstance(data, list) and isinstance(schema.get("items"), dict):
        for item in data:
            _fill(item, schema["items"])


def in_schema_order(data: Any, schema: dict[str, Any] | None = None) -> Any:
    """A copy of ``data`` with mapping keys in the order the schema lists them (for display)."""
    schema = resolve(schema if schema is not None else recipe_schema())
    if isinstance(data, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        ordered = {k: in_schema_order(data[k], properties[k]) for k in properties if k in data}
        for key, value in data.items():
            if key not in ordered:
                ordered[key] = in_schema_order(value, extra) if isinstance(extra, dict) else value
        return ordered
    if isinstance(data, list) and isinstance(schema.get("items"), dict):
        return [in_schema_order(item, schema["items"]) for item in data]
    return data
