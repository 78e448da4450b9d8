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


def test_regex_rouge_and_bleu():
    assert score(
        "regex:\\d{4}-\\d{2}-\\d{2}", ["2021-03-05", "2021-3-5", " 1999-12-31 "], ["", "", ""]
    ) == pytest.approx(2 / 3)
    # ROUGE-L F1: LCS "the cat on mat" = 4 words of 6 (prediction) and 5 (reference): F1 = 2*(4/6*4/5)/(4/6+4/5)
    assert score("rouge_l", ["the cat sat on the mat"], ["the cat lay on mat"]) == pytest.approx(
        2 * (4 / 6) * (4 / 5) / (4 / 6 + 4 / 5)
    )
    assert score(
        "bleu", ["the quick brown fox jumps over the lazy dog"], ["the quick brown fox jumps over the lazy dog"]
    ) == pytest.approx(1.0)
    assert score(
        "bleu", ["completely different words here"], ["the quick brown fox jumps over the lazy dog"]
    ) == pytest.approx(0.0)


def test_metric_names_are_the_schema_pattern():
    import re

    from olive_flows.evaluate.metrics import METRIC_NAMES
    from olive_flows.validate.schema import recipe_schema

    pattern = re.compile(recipe_schema()["$defs"]["metric"]["pattern"])
    assert all(pattern.fullmatch(name) for name in METRIC_NAMES)
    assert pattern.fullmatch("regex:^a+$") and not pattern.fullmatch("accuracy")
