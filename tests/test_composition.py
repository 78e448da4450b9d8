"""extends (deep merge), overrides, show, compile and new."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import REPO, write

from olive_flows.cli.main import main
from olive_flows.problems import UserError
from olive_flows.validate.load import load_recipe

pytestmark = pytest.mark.usefixtures("in_tmp")


def test_extends_a_builtin_merges_maps_and_replaces_lists(tmp_path):
    write(
        tmp_path / "mine.yaml",
        """\
        extends: quickstart
        name: mine
        adapters:
          contacts:
            r: 8
            training: {max_steps: 5}
          dates: null
        evaluation:
          metrics:
            contacts: [exact_match]
        """,
    )
    recipe = load_recipe("mine.yaml")
    assert recipe.name == "mine"
    assert list(recipe.adapters) == ["contacts"], "null removes the inherited adapter"
    contacts = recipe.adapters["contacts"]
    assert contacts["r"] == 8 and contacts["alpha"] == 32, "maps merge key by key"
    assert contacts["training"]["max_steps"] == 5 and contacts["training"]["batch_size"] == 4
    assert recipe.data["evaluation"]["metrics"]["contacts"] == ["exact_match"], "lists are replaced whole"
    assert recipe.data_file("contacts") == REPO / "recipes" / "data" / "quickstart" / "contacts.jsonl", (
        "inherited paths stay relative to the file that wrote them"
    )


def test_problems_in_an_inherited_value_point_at_the_parent_file(tmp_path):
    write(
        tmp_path / "base.yaml",
        """\
        schema_version: 1
        name: base
        model: {id: builtin:smollm2-135m-instruct}
        datasets:
          d: {path: rows.jsonl}
        adapters:
          a: {dataset: d}
        targets:
          cpu: {device: cpu}
        """,
    )
    write(tmp_path / "child.yaml", "extends: base.yaml\nname: child\n")
    with pytest.raises(UserError) as info:
        load_recipe("child.yaml")
    assert info.value.text == "base.yaml:5:13: datasets.d.path: data file rows.jsonl does not exist"


def test_extends_cycles_are_reported(tmp_path):
    write(tmp_path / "a.yaml", "extends: b.yaml\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(UserError) as info:
        load_recipe("a.yaml")
    assert info.value.text == "b.yaml:1:10: extends: 'a.yaml' extends this recipe again (a cycle)"


def test_show_prints_the_resolved_recipe(capsys):
    assert main(["show", "quickstart", "adapters.dates.r=4"]) == 0
    out = capsys.readouterr().out
    resolved = yaml.safe_load(out)
    assert resolved["adapters"]["dates"]["r"] == 4
    assert resolved["adapters"]["dates"]["training"]["weight_decay"] == 0.0, "defaults are filled in"
    assert list(resolved)[:3] == ["schema_version", "name", "description"], "keys in schema order"


def test_compile_writes_byte_stable_configs_without_training(tmp_path, capsys):
    args = ["compile", "quickstart", f"output.dir={tmp_path / 'out'}"]
    assert main(args) == 0
    written = [line.removeprefix("wrote ") for line in capsys.readouterr().out.splitlines()]
    data = [line for line in written if line.endswith("(train, eval and test split files)")]
    assert [line.split("/_work/data/")[1].split("-")[0] for line in data] == ["contacts", "dates"]
    paths = [line for line in written if line.endswith(".json")]
    assert [p.rsplit("/", 2)[-2:] for p in paths] == [
        ["cpu", "contacts.json"],
        ["cpu", "dates.json"],
        ["compiled", "olive_package_config.json"],
    ]
    first = [(tmp_path / p).read_bytes() for p in paths]
    assert main(args) == 0
    assert [(tmp_path / p).read_bytes() for p in paths] == first
    config = json.loads(first[0])
    assert list(config["passes"]) == ["train", "build", "quantize", "extract"]
    assert not (tmp_path / "out" / "quickstart" / "cpu").exists(), "a dry run builds no package"


def test_new_copies_a_recipe_with_paths_still_pointing_at_the_data(tmp_path, capsys):
    assert main(["new", "mine", "--from", "quickstart", "--dir", "work"]) == 0
    text = (tmp_path / "work" / "mine.yaml").read_text(encoding="utf-8")
    assert "name: mine\n" in text and "# Run:      olive-flows run work/mine.yaml" in text
    assert "# Two adapters on one SmolLM2-135M-Instruct base" in text, "comments are kept"
    recipe = load_recipe("work/mine.yaml")
    assert recipe.data_file("dates") == REPO / "recipes" / "data" / "quickstart" / "dates.jsonl"
    assert main(["new", "mine", "--from", "quickstart", "--dir", "work"]) == 2, "never overwrites"
    assert main(["new", "bad/name", "--from", "quickstart"]) == 2
