"""Every row format and file type a dataset can use, normalized to chat turns or plain text."""

from __future__ import annotations

import json
import sqlite3

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import chat, minimal_recipe

from olive_flows.data.formats import detect_format
from olive_flows.data.prepare import prepare_dataset
from olive_flows.problems import UserError
from olive_flows.validate.load import load_recipe

ROWS = 10


def recipe_for(tmp_path, dataset: dict):
    recipe = minimal_recipe(
        name="formats",
        datasets={"d": dataset if "eval_path" in dataset else {**dataset, "eval_split": 0.2}},
        output={"dir": str(tmp_path / "out")},
    )
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return load_recipe(tmp_path / "recipe.yaml")


def prepared_rows(tmp_path, dataset: dict):
    recipe = recipe_for(tmp_path, dataset)
    data = prepare_dataset(recipe, "d", tmp_path / "prepared")
    rows = [
        json.loads(line)
        for f in (data.train_file, data.eval_file)
        for line in f.read_text(encoding="utf-8").splitlines()
    ]
    return data, sorted(rows, key=json.dumps)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_instruction_rows_in_a_json_file_become_chat_turns(tmp_path):
    rows = [
        {"instruction": f"Double {i}", "input": "" if i % 2 else "show work", "output": str(2 * i)} for i in range(ROWS)
    ]
    (tmp_path / "rows.json").write_text(json.dumps(rows), encoding="utf-8")
    data, normalized = prepared_rows(tmp_path, {"path": "rows.json"})
    assert (data.format, data.detected, data.kind) == ("instruction", True, "chat")
    expected = [chat(f"Double {i}" + ("" if i % 2 else "\n\nshow work"), str(2 * i)) for i in range(ROWS)]
    assert normalized == sorted(expected, key=json.dumps)


def test_completion_rows_in_parquet(tmp_path):
    pq.write_table(
        pa.table({"prompt": [f"p{i}" for i in range(ROWS)], "completion": [f"c{i}" for i in range(ROWS)]}),
        tmp_path / "rows.parquet",
    )
    data, normalized = prepared_rows(tmp_path, {"path": "rows.parquet"})
    assert (data.format, data.detected) == ("completion", True)
    assert normalized == sorted([chat(f"p{i}", f"c{i}") for i in range(ROWS)], key=json.dumps)


def test_template_over_csv_columns(tmp_path):
    lines = ["question,answer,topic"] + [f"q{i},a{i},math" for i in range(ROWS)]
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    template = {"system": "Topic: {topic}", "user": "Q: {question}", "assistant": "{answer}"}
    data, normalized = prepared_rows(tmp_path, {"path": "rows.csv", "template": template})
    assert data.format == "template" and data.kind == "chat"
    assert normalized == sorted([chat(f"Q: q{i}", f"a{i}", "Topic: math") for i in range(ROWS)], key=json.dumps)


def test_text_rows_stay_text(tmp_path):
    write_jsonl(tmp_path / "rows.jsonl", [{"text": f"line {i}", "id": i} for i in range(ROWS)])
    data, normalized = prepared_rows(tmp_path, {"path": "rows.jsonl", "format": "text"})
    assert (data.format, data.detected, data.kind) == ("text", False, "text")
    assert normalized == sorted([{"text": f"line {i}"} for i in range(ROWS)], key=json.dumps)


def test_eval_path_replaces_the_split(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [chat(f"t{i}", "x") for i in range(ROWS)])
    write_jsonl(tmp_path / "held.jsonl", [chat("h", "y")])
    recipe = recipe_for(tmp_path, {"path": "train.jsonl", "eval_path": "held.jsonl"})
    data = prepare_dataset(recipe, "d", tmp_path / "prepared")
    assert (data.train_rows, data.eval_rows) == (ROWS, 1)


def test_editing_the_data_changes_the_split_folder(tmp_path):
    write_jsonl(tmp_path / "rows.jsonl", [chat(f"q{i}", "a") for i in range(ROWS)])
    first, _ = prepared_rows(tmp_path, {"path": "rows.jsonl"})
    write_jsonl(tmp_path / "rows.jsonl", [chat(f"q{i}", "b") for i in range(ROWS)])
    second, _ = prepared_rows(tmp_path, {"path": "rows.jsonl"})
    assert first.train_file.parent != second.train_file.parent, "Olive's cache must not reuse the old data"


def test_hub_dataset_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = recipe_for(tmp_path, {"hf": "olive-flows/does-not-exist", "split": "train"})
    with pytest.raises(UserError) as info:
        prepare_dataset(recipe, "d", tmp_path / "prepared")
    [problem] = info.value.problems
    assert problem.field == "datasets.d" and problem.location.line == 6
    assert problem.message.startswith("cannot load Hugging Face dataset 'olive-flows/does-not-exist' (split train)")
    assert problem.message.endswith("It needs network access, or the dataset in the local Hugging Face cache.")


def test_mix_draws_train_rows_by_weight_and_pools_held_out_rows(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [chat(f"a{i}", "x") for i in range(40)])
    write_jsonl(tmp_path / "b.jsonl", [chat(f"b{i}", "y") for i in range(10)])
    recipe = minimal_recipe(
        name="mix",
        datasets={
            "a": {"path": "a.jsonl", "eval_split": 0.1},
            "b": {"path": "b.jsonl", "eval_split": 0.1},
            "both": {"mix": {"a": 1, "b": 3}},
        },
        adapters={"m": {"dataset": "both"}},
    )
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    mixed = prepare_dataset(load_recipe(tmp_path / "recipe.yaml"), "both", tmp_path / "prepared")
    train = [json.loads(line) for line in mixed.train_file.read_text(encoding="utf-8").splitlines()]
    from_b = sum(row["messages"][0]["content"].startswith("b") for row in train)
    assert len(train) == 36 + 9 and from_b == round(45 * 3 / 4), "b is oversampled to three quarters"
    assert mixed.rows["eval"] == 4 + 1 and mixed.kind == "chat"


TEMPLATE = {"user": "{question}", "assistant": "{answer}"}


def test_template_rows_with_an_empty_column_are_invalid_rows(tmp_path, in_tmp):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(ROWS)]
    rows[6]["answer"], rows[7]["answer"], rows[8]["question"] = None, "", "  "
    rows[9] = {"question": 7, "answer": 49}  # numbers are fine values, formatted as text
    write_jsonl(tmp_path / "rows.jsonl", rows)
    data, normalized = prepared_rows(tmp_path, {"path": "rows.jsonl", "template": TEMPLATE, "on_error": "skip"})
    assert [p.format() for p in data.report.skipped] == [
        "rows.jsonl:7:1: does not fit the template: column 'answer' used by the template is empty (null)",
        "rows.jsonl:8:1: does not fit the template: column 'answer' used by the template is empty (empty text)",
        "rows.jsonl:9:1: does not fit the template: column 'question' used by the template is empty (only whitespace)",
    ]
    assert len(normalized) == ROWS - 3 and chat("7", "49") in normalized
    assert not any(m["content"] == "None" for row in normalized for m in row["messages"])


def test_sqlite_null_fails_the_run_where_it_is(tmp_path, in_tmp):
    connection = sqlite3.connect(tmp_path / "rows.db")
    connection.execute("CREATE TABLE qa (question TEXT, answer TEXT)")
    connection.executemany(
        "INSERT INTO qa VALUES (?, ?)", [(f"q{i}", None if i == 2 else f"a{i}") for i in range(ROWS)]
    )
    connection.commit()
    connection.close()
    with pytest.raises(UserError) as info:
        recipe_for(tmp_path, {"path": "rows.db", "table": "qa", "template": TEMPLATE})
    assert info.value.text == (
        "recipe.yaml:7:11: datasets.d.path: rows.db table qa rowid 3: does not fit the template: "
        "column 'answer' used by the template is empty (null)"
    )


def test_empty_csv_cell_fails_the_run(tmp_path, in_tmp):
    lines = ["question,answer"] + [f"q{i},{'' if i == 8 else f'a{i}'}" for i in range(ROWS)]
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    recipe = recipe_for(tmp_path, {"path": "rows.csv", "template": TEMPLATE})  # the first rows are fine
    with pytest.raises(UserError) as info:
        prepare_dataset(recipe, "d", tmp_path / "prepared")
    assert info.value.text == (
        "rows.csv:10:1: does not fit the template: column 'answer' used by the template is empty (empty text)"
    )


def test_input_output_rows_are_instruction_rows(tmp_path, in_tmp):
    rows = [{"input": f"Double {i}", "output": str(2 * i)} for i in range(ROWS)]
    rows[0]["system"] = "Be brief."
    write_jsonl(tmp_path / "rows.jsonl", rows)
    data, normalized = prepared_rows(tmp_path, {"path": "rows.jsonl"})
    assert (data.format, data.detected, data.kind) == ("instruction", True, "chat")
    expected = [chat("Double 0", "0", "Be brief.")] + [chat(f"Double {i}", str(2 * i)) for i in range(1, ROWS)]
    assert normalized == sorted(expected, key=json.dumps)


def test_instruction_response_rows_are_instruction_rows(tmp_path, in_tmp):
    rows = [{"instruction": f"Double {i}", "response": str(2 * i)} for i in range(ROWS)]
    rows[1]["input"] = "show work"
    write_jsonl(tmp_path / "rows.jsonl", rows)
    data, normalized = prepared_rows(tmp_path, {"path": "rows.jsonl"})
    assert (data.format, data.detected) == ("instruction", True)
    expected = [chat(f"Double {i}" + ("\n\nshow work" if i == 1 else ""), str(2 * i)) for i in range(ROWS)]
    assert normalized == sorted(expected, key=json.dumps)


def test_an_empty_response_is_named(tmp_path, in_tmp):
    write_jsonl(tmp_path / "rows.jsonl", [{"instruction": "Double 1", "response": " "}])
    with pytest.raises(UserError) as info:
        recipe_for(tmp_path, {"path": "rows.jsonl", "format": "instruction"})
    assert info.value.text == (
        "recipe.yaml:8:11: datasets.d.path: rows.jsonl:1:1: not a valid instruction row: "
        "'response' must be non-empty text"
    )


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        ({"messages": [], "input": "i", "output": "o"}, "chat"),
        ({"instruction": "i", "input": "", "output": "o", "response": "r"}, "instruction"),
        ({"prompt": "p", "completion": "c", "input": "i", "output": "o"}, "completion"),
        ({"prompt": "p", "completion": "c", "instruction": "i", "response": "r"}, "completion"),
        ({"text": "t", "input": "i", "output": "o"}, "text"),
        ({"text": "t", "instruction": "i", "response": "r"}, "text"),
        ({"instruction": "i", "response": "r"}, "instruction"),
        ({"input": "i", "output": "o"}, "instruction"),
        ({"question": "q", "answer": "a"}, None),
        ({"input": "i", "response": "r"}, None),
    ],
)
def test_detection_keeps_every_earlier_format(row, fmt):
    assert detect_format(row) == fmt
