"""Reading, checking, splitting and cleaning datasets."""

from __future__ import annotations

import json

import pytest
from conftest import chat

from olive_flows.data.clean import clean_rows, near_duplicate_groups, normalize_whitespace, scrub
from olive_flows.data.prepare import Report, normalize_rows, split_rows
from olive_flows.data.sources import iter_local
from olive_flows.problems import UserError

MALFORMED = [
    json.dumps(chat("fine")),
    "{not json",
    json.dumps({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}),
    "",
    json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}),
    json.dumps({"text": "no messages"}),
    json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
    json.dumps({"messages": [{"content": "no role"}, {"role": "assistant", "content": "a"}]}),
]


def test_every_bad_row_is_named_with_its_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.jsonl").write_text("\n".join(MALFORMED) + "\n", encoding="utf-8")
    with pytest.raises(UserError) as info:
        normalize_rows(iter_local(tmp_path / "d.jsonl"), {"format": "chat"})
    assert [p.format() for p in info.value.problems] == [
        "d.jsonl:2:2: invalid JSON: Expecting property name enclosed in double quotes",
        "d.jsonl:3:1: not a valid chat row: messages[0].role must be one of system, user, assistant, found 'robot'",
        "d.jsonl:5:1: not a valid chat row: messages[1].content must be non-empty text",
        "d.jsonl:6:1: not a valid chat row: expected a non-empty 'messages' list",
        "d.jsonl:7:1: not a valid chat row: the conversation must end with an assistant message (the text the adapter learns)",
        "d.jsonl:8:1: not a valid chat row: messages[0].role must be one of system, user, assistant, found None",
    ]


def test_skip_policy_keeps_good_rows_and_reports_bad_ones(tmp_path):
    (tmp_path / "d.jsonl").write_text("\n".join(MALFORMED) + "\n", encoding="utf-8")
    report = Report()
    rows, fmt, detected = normalize_rows(iter_local(tmp_path / "d.jsonl"), {"format": None, "on_error": "skip"}, report)
    assert rows == [chat("fine")] and (fmt, detected) == ("chat", True)
    assert report.read == 7 and len(report.skipped) == 6


def test_rating_filter_and_sqlite_rows(tmp_path):
    import sqlite3

    db = tmp_path / "logs.sqlite"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE conversations (messages TEXT, rating INTEGER)")
        for i, rating in enumerate([5, 2, 4, None]):
            connection.execute(
                "INSERT INTO conversations VALUES (?, ?)", (json.dumps(chat(f"q{i}")["messages"]), rating)
            )
    report = Report()
    spec = {"format": "chat", "rating": {"column": "rating", "min": 4}}
    rows, _, _ = normalize_rows(iter_local(db, "conversations"), spec, report)
    assert rows == [chat("q0"), chat("q2")] and report.rating_filtered == 2


def test_split_is_deterministic_disjoint_and_keeps_duplicates_together():
    rows = [chat(f"q{i % 70}") for i in range(100)]  # 30 rows appear twice
    train, held_out, test = split_rows(rows, (0.2, 0.1), seed=3)
    assert (train, held_out, test) == split_rows(rows, (0.2, 0.1), seed=3)
    assert len(train) + len(held_out) + len(test) == 100
    assert 20 <= len(held_out) <= 21 and 10 <= len(test) <= 11
    keys = [{json.dumps(r) for r in side} for side in (train, held_out, test)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2]), (
        "no duplicate straddles a split"
    )
    assert split_rows(rows, (0.2, 0.1), seed=4)[1] != held_out


def test_cleaning_options():
    rows = [
        chat(" Hello\u200b  world \n\n\n\nbye "),
        chat("Hello world\n\nbye"),
        chat("mail a@b.co or call +1 555 123 4567"),
    ]
    cleaned, counts = clean_rows(rows, {"normalize_whitespace": True, "dedupe": "exact", "scrub": ["email", "phone"]})
    assert cleaned == [chat("Hello world\n\nbye"), chat("mail <EMAIL> or call <PHONE>")]
    assert counts == {"whitespace_normalized": 1, "scrubbed": 1, "exact_duplicates": 1, "near_duplicates": 0}
    assert normalize_whitespace("a\tb\r\nc\x07") == "a b\nc"
    assert scrub("see https://x.org/a, on 2021-03-05", ["url", "phone"]) == "see <URL>, on 2021-03-05"


def test_near_duplicates_are_grouped():
    base = "The quarterly report shows revenue grew by twelve percent in the northern region this year."
    rows = [
        chat(base),
        chat(base.replace("twelve", "twelve ")),
        chat("Completely unrelated sentence about the weather."),
    ]
    assert near_duplicate_groups(rows, 0.9) == [0, 0, 2]
    assert clean_rows(rows, {"dedupe": "near", "near_threshold": 0.9})[1]["near_duplicates"] == 1
