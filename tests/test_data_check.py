"""``olive-flows data check``: every bad row of every file type, named by its line or row."""

from __future__ import annotations

import json
import sqlite3

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import chat

from olive_flows.cli.main import main

pytestmark = pytest.mark.usefixtures("in_tmp", "smollm2_folder")


def chat_line(user: str, answer: str = "ok") -> str:
    return json.dumps(chat(user, answer))


def check(capsys, *args: str) -> tuple[int, list[str]]:
    code = main(["data", "check", *args])
    return code, [line.strip() for line in capsys.readouterr().out.splitlines()]


def test_jsonl_problems_and_long_rows_with_line_numbers(tmp_path, capsys):
    lines = [
        chat_line("short"),
        chat_line("x " * 200, "long answer"),
        "",
        '{"messages": "not json"}',
        chat_line("fine", ""),
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out = check(capsys, "d.jsonl", "--max-seq-len", "64")
    assert code == 2
    assert (
        "d.jsonl:4:1: not a valid chat row (format detected from the first row): 'messages' is text but not valid JSON"
        in out
    )
    assert (
        "d.jsonl:5:1: not a valid chat row (format detected from the first row): messages[1].content must be non-empty text"
        in out
    )
    assert any(
        line.startswith("d.jsonl:2:1: warning: training: ") and "nothing left to learn within max_seq_len 64" in line
        for line in out
    )
    assert "rows: 4 read, 2 valid, 2 invalid, 0 below the rating filter, 0 exact duplicates" in out
    assert "2 invalid rows: a run stops here (set on_error: skip to leave them out)" in out


def test_csv_lines_json_rows_parquet_rows_and_sqlite_rowids(tmp_path, capsys):
    (tmp_path / "d.csv").write_text(
        'prompt,completion\nhi,hello\n"multi\nline",ok\n,missing prompt\n', encoding="utf-8"
    )
    code, out = check(capsys, "d.csv")
    assert (
        code == 2
        and "d.csv:5:1: not a valid completion row (format detected from the first row): 'prompt' must be non-empty text"
        in out
    )

    (tmp_path / "d.json").write_text(json.dumps([{"text": "a"}, {"text": 3}]), encoding="utf-8")
    code, out = check(capsys, "d.json")
    assert (
        code == 2
        and "d.json row 2: not a valid text row (format detected from the first row): 'text' must be non-empty text"
        in out
    )

    pq.write_table(pa.table({"instruction": ["do", ""], "output": ["done", "x"]}), tmp_path / "d.parquet")
    code, out = check(capsys, "d.parquet")
    assert (
        code == 2
        and "d.parquet row 2: not a valid instruction row (format detected from the first row): 'instruction' must be non-empty text"
        in out
    )

    with sqlite3.connect(tmp_path / "logs.db") as db:
        db.execute("CREATE TABLE chats (messages TEXT, rating INT)")
        db.execute(
            "INSERT INTO chats VALUES (?, 5)",
            (json.dumps([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]),),
        )
        db.execute("INSERT INTO chats VALUES (?, 1)", (json.dumps([{"role": "user", "content": "q"}]),))
    code, out = check(capsys, "logs.db", "--table", "chats", "--format", "chat")
    assert code == 2 and any(line.startswith("logs.db table chats rowid 2: not a valid chat row") for line in out)


def test_recipe_check_summarizes_each_dataset_per_adapter(capsys):
    code, out = check(capsys, "quickstart")
    assert code == 0
    assert "contacts: format chat (detected)" in out and "messages by role: assistant 400, user 400" in out
    assert any(
        line.startswith("adapter contacts: tokens per row p50 ") and "max_seq_len 128 truncates 0" in line
        for line in out
    )
