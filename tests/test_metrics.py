"""Task metrics on hand-computed examples."""

from __future__ import annotations

import random

import pytest

from olive_flows.evaluate.metrics import (
    NORMALIZE,
    contains,
    json_fields,
    json_valid,
    metric_label,
    normalized,
    score,
    settled,
)
from olive_flows.validate.schema import recipe_schema

DEFAULT = recipe_schema()["$defs"]["evaluation"]["properties"]["normalize"]["default"]


def test_the_default_normalization_is_whitespace_only():
    assert DEFAULT == ["whitespace"]
    assert score("exact_match", [" 2021-03-05\n"], ["2021-03-05"], DEFAULT) == 1.0
    assert score("exact_match", ["2021-03-05."], ["2021-03-05"], DEFAULT) == 0.0
    assert score("exact_match", ['{"a": 1,\n  "b": 2}'], ['{"a": 1, "b": 2}'], DEFAULT) == 1.0


def test_case_is_normalized_only_when_asked():
    assert score("exact_match", ["Positive"], ["positive"], []) == 0.0
    assert score("exact_match", ["Positive"], ["positive"], DEFAULT) == 0.0
    assert score("exact_match", ["Positive"], ["positive"], ["case"]) == 1.0
    assert score("exact_match", [" STRASSE\n"], ["straße"], ["whitespace", "case"]) == 1.0  # Unicode casefold


def test_strict_compares_byte_for_byte():
    assert score("exact_match", ["positive\n"], ["positive"], []) == 0.0
    assert score("exact_match", ["positive\n"], ["positive"], DEFAULT) == 1.0
    assert (
        score("exact_match", ["a  b"], ["a b"], []) == 0.0 and score("exact_match", ["a  b"], ["a b"], DEFAULT) == 1.0
    )
    assert score("contains", ["it is positive"], ["positive "], []) == 0.0
    assert score("contains", ["it is positive"], ["positive "], DEFAULT) == 1.0


def test_punctuation_and_articles():
    assert score("exact_match", ["Positive."], ["positive"], ["case"]) == 0.0
    assert score("exact_match", ["Positive."], ["positive"], ["case", "punctuation"]) == 1.0
    assert normalized("«Hello», world… ¿no?", ["punctuation"]) == "Hello world no"  # Unicode punctuation
    assert normalized("$5 + 3 = 8", ["punctuation"]) == "$5 + 3 = 8"  # symbols are not punctuation
    assert score("exact_match", ["The Eiffel Tower"], ["Eiffel Tower"], ["articles"]) == 1.0
    assert normalized("An apple, a pear and the end", ["articles"]) == "apple, pear and end"
    assert normalized("Theatre and Anna stay", ["articles"]) == "Theatre and Anna stay"  # whole words only
    squad = ["whitespace", "case", "punctuation", "articles"]
    assert score("exact_match", ["  The Eiffel-Tower!"], ["eiffel tower"], squad) == 0.0  # as SQuAD: no hyphen split
    assert score("exact_match", ["  The (Eiffel) Tower!"], ["eiffel tower"], squad) == 1.0


def test_normalizations_apply_in_a_fixed_order_and_names_are_checked():
    # punctuation before articles, whatever the list's order: "the," loses its comma, then is an article
    assert normalized("the, end", ["articles", "punctuation", "whitespace"]) == "end"
    with pytest.raises(ValueError, match="unknown normalization"):
        normalized("x", ["lower"])


def test_contains_normalizes_the_answer_and_the_reference():
    assert score("contains", ["The review is POSITIVE."], ["positive"], DEFAULT) == 0.0
    assert score("contains", ["The review is POSITIVE."], ["positive"], ["case"]) == 1.0
    assert score("contains", ["the date:\n2021 03 05"], ["2021 03 05"], DEFAULT) == 1.0
    assert score("contains", ["the date:  2021  03  05"], ["2021 03 05"], DEFAULT) == 1.0
    assert score("contains", ["the date:  2021  03  05"], ["2021 03 05"], []) == 0.0


def test_other_metrics_ignore_normalization():
    answers, references = ['  {"a": "X"}  '], ['{"a": "x"}']
    for names in ([], DEFAULT, ["case", "punctuation", "articles", "whitespace"]):
        assert score("json_fields", answers, references, names) == 0.0
        assert score("json_valid", answers, references, names) == 1.0
        assert score("regex:[{].*X.*[}]", answers, references, names) == 1.0


def test_reports_state_the_normalization_of_exact_match_and_contains():
    assert metric_label("exact_match", ["whitespace"]) == "exact_match (normalized: whitespace)"
    assert metric_label("contains", ["whitespace", "case"]) == "contains (normalized: case, whitespace)"
    assert metric_label("exact_match", []) == "exact_match (strict)"
    assert metric_label("json_fields", ["case"]) == "json_fields"
    assert metric_label("exact_match", None) == "exact_match"  # an eval.json from before normalize


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


def test_an_answer_is_settled_only_when_no_continuation_changes_its_scores():
    assert settled(["exact_match"], "The 22nd", "1993-08-22", DEFAULT)
    assert not settled(["exact_match"], "1993-08", "1993-08-22", DEFAULT), "still on the reference"
    assert not settled(["exact_match"], "1993-08-22 ", "1993-08-22", DEFAULT), "trailing whitespace normalizes away"
    assert not settled(["exact_match"], "a", "and so on", ["articles"]), "'a' is dropped, 'and' is not"
    assert settled(["exact_match"], "a b c", "and so on", ["articles"]), "the words before the last whitespace"
    assert settled(["contains"], "it is positive, I", "positive", DEFAULT)
    assert not settled(["contains"], "it is posit", "positive", DEFAULT)
    assert settled(["json_valid", "json_fields"], "Elif Moreau", '{"name": "Elif"}')
    assert not settled(["json_valid"], "Inf", "{}"), "Python's json reads Infinity"
    assert settled(["json_valid"], "I'm sorry", "{}") and settled(["json_valid"], "I met", "{}")
    assert settled(["json_fields"], "[1, 2", '{"a": 1}') and not settled(["json_valid"], "[1, 2", '{"a": 1}')
    assert not settled(["json_valid", "exact_match"], "x", "xy") and not settled(["json_fields"], " ", '{"a": 1}')
    assert not settled(["rouge_l"], "anything", "else") and not settled(["regex:\\d+"], "x", "1")


def test_a_settled_answer_scores_as_every_continuation_of_it():
    """Random answers cut at random points, every normalization: where the cut is settled, the cut
    answer and the whole one score the same on each of its metrics."""
    pieces = [
        "a",
        "an",
        "the",
        "The",
        " ",
        "\n",
        ",",
        ".",
        "x",
        "th",
        "-",
        "ß",
        "!",
        "1",
        "{",
        "}",
        '"',
        "I",
        "Inf",
        "nul",
    ]
    rng = random.Random(0)
    seen = 0
    for _ in range(20000):
        answer = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        reference = answer[: rng.randint(0, len(answer))] if rng.random() < 0.5 else rng.choice(pieces)
        cut = answer[: rng.randint(0, len(answer))]
        names = [name for name in NORMALIZE if rng.random() < 0.5]
        metrics = rng.sample(["exact_match", "contains", "json_valid"], rng.randint(1, 2))
        if settled(metrics, cut, reference, names):
            seen += 1
            for metric in metrics:
                assert score(metric, [cut], [reference], names) == score(metric, [answer], [reference], names)
    assert seen > 2000
