"""Hostile input: no recipe file and no data file makes olive-flows crash with a traceback.

Hypothesis generates YAML text, recipe-shaped documents with wrong types and values, and data
files of random lines; every one must end in a result or a user error (exit code 2), never an
exception escaping the CLI.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml
from conftest import minimal_recipe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from olive_flows.cli.main import main

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True) | st.text(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
KEYS = ["schema_version", "name", "description", "extends", "model", "datasets", "adapters", "targets", "evaluation"]
VALID = minimal_recipe(name="fuzz", datasets={"d": {"path": "rows.jsonl"}})


def _validate(text: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        (Path(tmp) / "rows.jsonl").write_text('{"text": "hello"}\n', encoding="utf-8")
        return main(["validate", str(path)])


@SETTINGS
@given(st.text(max_size=300))
def test_any_text_as_a_recipe(text):
    assert _validate(text) in (0, 2)


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6))
def test_recipe_shaped_documents_with_random_values(document):
    assert _validate(yaml.safe_dump({**VALID, **document}, allow_unicode=True)) in (0, 2)


@SETTINGS
@given(st.sampled_from(KEYS[4:]), st.lists(st.text(max_size=8), min_size=1, max_size=3), values)
def test_random_values_deep_inside_a_valid_recipe(section, path, value):
    document = json.loads(json.dumps(VALID))
    node = document.setdefault(section, {})
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
        node[path[-1]] = value
    assert _validate(yaml.safe_dump(document, allow_unicode=True)) in (0, 2)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.text(max_size=80) | values.map(json.dumps), max_size=8), st.sampled_from([".jsonl", ".json", ".csv"])
)
def test_any_data_file(lines, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"rows{suffix}"
        path.write_text("\n".join(line.replace("\x00", "") for line in lines), encoding="utf-8", errors="surrogatepass")
        assert main(["data", "check", str(path)]) in (0, 1, 2)
