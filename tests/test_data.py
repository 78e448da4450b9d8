"""Reading, checking and splitting datasets."""

from __future__ import annotations

import json

import pytest

from olive_flows.data.prepare import normalize_rows, split_rows
from olive_flows.data.sources import iter_local
from olive_flows.validate.problems import UserError


def chat(q: str, a: str = "ok") -> str:
    return json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})


def test_every_bad_row_is_named_with_its_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = [
        chat("fine"),
        "{not json",
        json.dumps({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}),
        "",
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}),
        json.dumps({"text": "no messages"}),
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as info:
        normalize_rows(iter_local(tmp_path / "d.jsonl"), "chat")
    found = [p.format() for p in info.value.problems]
    assert [f.split(":")[1] for f in found] == ["2", "3", "5", "6"]
    assert found[0].startswith("d.jsonl:2:2: invalid JSON")
    assert "messages[0].role must be one of system, user, assistant, found 'robot'" in found[1]
    assert "messages[1].content must be non-empty text" in found[2]
    assert "expected a non-empty 'messages' list" in found[3]


def test_split_is_deterministic_and_disjoint():
    rows = list(range(100))
    train, held_out = split_rows(rows, 0.2, seed=3)
    assert (train, held_out) == split_rows(rows, 0.2, seed=3)
    assert len(held_out) == 20 and sorted(train + held_out) == rows
    assert split_rows(rows, 0.2, seed=4)[1] != held_out
    assert len(split_rows(list(range(3)), 0.01, seed=0)[1]) == 1, "at least one held-out row"
