"""Task metrics on hand-computed examples."""

from __future__ import annotations

import pytest

from olive_flows.evaluate.metrics import contains, exact_match, json_fields, json_valid, score


def test_exact_match_ignores_surrounding_whitespace_only():
    assert exact_match(" 2021-03-05\n", "2021-03-05") == 1.0
    assert exact_match("2021-03-05.", "2021-03-05") == 0.0


def test_json_fields_counts_exactly_reproduced_fields():
    reference = '{"name": "Ada Berg", "age": 41, "city": "Oslo"}'
    assert json_fields('{"name": "Ada Berg", "age": 41, "city": "Oslo"}', reference) == 1.0
    assert json_fields('{"name": "Ada Berg", "age": "41", "city": "Oslo", "x": 1}', reference) == pytest.approx(2 / 3)
    assert json_fields('Sure! {"name": "Ada Berg"}', reference) == 0.0
    assert json_fields("[1, 2]", reference) == 0.0


def test_json_valid_and_contains():
    assert json_valid('{"a": 1}', "") == 1.0 and json_valid("{'a': 1}", "") == 0.0
    assert contains("The date is 2021-03-05.", "2021-03-05") == 1.0 and contains("2021-3-5", "2021-03-05") == 0.0


def test_score_is_the_mean_over_rows():
    assert score("exact_match", ["a", "b", "c", "x"], ["a", "b", "c", "d"]) == 0.75
