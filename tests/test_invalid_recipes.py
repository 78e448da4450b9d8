"""The corpus of broken recipes under tests/recipes/invalid: each fails with exactly the problems
written at its end (``# expect: file:line:col: field: message``), never with a traceback.
(How fast validation is, is measured in bench/, not asserted here.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from olive_flows.problems import UserError
from olive_flows.validate.load import load_recipe

CORPUS = Path(__file__).parent / "recipes" / "invalid"
CASES = sorted(CORPUS.glob("*.yaml"))


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_broken_recipe_reports_exactly_its_mistakes(path, monkeypatch):
    monkeypatch.chdir(CORPUS)
    expected = [
        line.removeprefix("# expect: ")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("# expect: ")
    ]
    assert expected, f"{path.name} declares no expected problem"
    with pytest.raises(UserError) as info:
        load_recipe(path.name)
    assert info.value.text.splitlines() == expected
