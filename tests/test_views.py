"""The typed views of a recipe hold exactly the fields of their schema objects."""

from __future__ import annotations

import pytest

from olive_flows.recipe.catalog import builtin_recipes
from olive_flows.recipe.views import VIEWS, field_names
from olive_flows.validate.load import load_recipe
from olive_flows.validate.schema import recipe_schema, resolve


def schema_object(path: str) -> dict:
    """The schema object at a dotted path such as ``adapters.<name>.training``."""
    node = resolve(recipe_schema())
    for part in path.split("."):
        node = resolve(node["additionalProperties"] if part == "<name>" else node["properties"][part])
    return node


@pytest.mark.parametrize("path", sorted(VIEWS))
def test_each_view_has_the_fields_of_its_schema_object(path):
    assert field_names(VIEWS[path]) == set(schema_object(path)["properties"])


@pytest.mark.parametrize("name", sorted(builtin_recipes()))
def test_every_builtin_recipe_has_views(name):
    spec = load_recipe(name).spec
    assert set(spec.adapters) == set(load_recipe(name).adapters)
    for target in spec.targets.values():
        assert target.execution_provider and target.profile["device"] == target.device
