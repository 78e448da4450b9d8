"""The recipe schema is valid JSON Schema 2020-12, closed everywhere, documented, and owns the defaults."""

from __future__ import annotations

from conftest import minimal_recipe
from jsonschema import Draft202012Validator

from olive_flows.validate.schema import recipe_schema, resolve, with_defaults


def walk(schema, path="#"):
    """Every subschema with its JSON pointer."""
    yield path, schema
    if isinstance(schema, dict):
        for key, value in schema.items():
            if isinstance(value, dict):
                yield from walk(value, f"{path}/{key}")
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    yield from walk(item, f"{path}/{key}/{i}")


def test_schema_is_valid_2020_12():
    Draft202012Validator.check_schema(recipe_schema())
    assert recipe_schema()["$schema"].endswith("2020-12/schema")


def test_every_object_is_closed_and_every_field_documented():
    for path, node in walk(recipe_schema()):
        if isinstance(node, dict) and node.get("type") == "object":
            assert "additionalProperties" in node, f"{path} must set additionalProperties"
            if "properties" in node:
                assert node["additionalProperties"] is False, f"{path} allows unknown keys"
        if isinstance(node, dict) and path.count("/properties/") and path.rsplit("/", 2)[-2] == "properties":
            assert "description" in resolve(node), f"{path} has no description"


def test_defaults_are_filled_from_the_schema():
    raw = minimal_recipe(targets={"t": {"device": "cpu"}})
    data = with_defaults(raw)
    assert data["model"]["trust_remote_code"] is False
    assert data["adapters"]["a"]["r"] == 16 and data["adapters"]["a"]["training"]["learning_rate"] == 0.0002
    assert data["targets"]["t"]["precision"] == "int4" and data["targets"]["t"]["int4"]["block_size"] == 32
    assert data["output"]["dir"] == "outputs" and data["evaluation"]["max_new_tokens"] == 64
    assert data["evaluation"]["normalize"] == ["whitespace"], "exact_match and contains trim, as before normalize"
    assert "r" not in raw["adapters"]["a"], "filling defaults must not change the input"
