"""``olive-flows chat --log``: a rated chat session is a dataset, as a ``serve --log`` file is."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from olive_flows.data.prepare import Report, normalize_rows
from olive_flows.data.sources import iter_local

pytestmark = pytest.mark.slow
SESSION = "Normalize this date: 5 March 2021\n/rate 5 spot on\nAnd 1 May 2020?\n/rate 2\nThanks\n/quit\n"


def test_a_rated_session_becomes_training_rows(tiny_package, tmp_path):
    log = tmp_path / "chat.jsonl"
    command = [sys.executable, "-m", "olive_flows", "chat", str(tiny_package), "--adapter", "dates"]
    command += ["--max-new-tokens", "6", "--log", str(log)]
    session = subprocess.run(command, input=SESSION, capture_output=True, text=True, timeout=300)
    assert session.returncode == 0, session.stderr
    assert "rated 5" in session.stderr and "rated 2" in session.stderr

    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    exchanges = [line for line in lines if "messages" in line]
    ratings = [line["feedback"] for line in lines if "feedback" in line]
    assert len(exchanges) == 3 and [r["rating"] for r in ratings] == [5, 2]
    assert ratings[0] == {"id": exchanges[0]["id"], "rating": 5, "comment": "spot on"}
    assert exchanges[0]["model"] == "tiny:dates" and exchanges[0]["adapter"] == "dates"
    assert [m["role"] for m in exchanges[1]["messages"]] == ["user", "assistant"] * 2, "the conversation so far"
    assert exchanges[0]["usage"]["completion_tokens"] <= 6

    report = Report()
    rows, _, _ = normalize_rows(iter_local(log), {"format": "chat", "rating": {"min": 4, "column": "rating"}}, report)
    assert rows == [{"messages": exchanges[0]["messages"]}], "only the well-rated exchange is kept"
    assert report.rating_filtered == 2, "the low-rated and the unrated one are counted out"

    recipe = {
        "schema_version": 1,
        "name": "fromchat",
        "model": {"id": "builtin:smollm2-135m-instruct"},
        "datasets": {"chats": {"path": "chat.jsonl", "rating": {"min": 4}}},
        "adapters": {"chats": {"dataset": "chats"}},
        "targets": {"cpu": {"device": "cpu"}},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    check = subprocess.run(
        [sys.executable, "-m", "olive_flows", "data", "check", "recipe.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert "ratings: 2 1, 5 1, unrated 1" in check.stdout, check.stdout + check.stderr
    assert "2 below the rating filter" in check.stdout


def test_a_rated_chat_log_trains_an_adapter(tiny_package, tiny_model, tmp_path):
    """Four answers rated 4 or 5 (of six) train an adapter of the tiny Llama, packaged and switchable."""
    questions = [f"Normalize this date: {day} March 2021" for day in range(1, 7)]
    ratings = ["5", "4", "5", "2", "5", ""]
    session = "".join(f"{q}\n" + (f"/rate {r}\n" if r else "") for q, r in zip(questions, ratings, strict=True))
    log = tmp_path / "chat.jsonl"
    command = [
        sys.executable,
        "-m",
        "olive_flows",
        "chat",
        str(tiny_package),
        "--max-new-tokens",
        "4",
        "--adapter",
        "contacts",
    ]
    subprocess.run([*command, "--log", str(log)], input=session + "/quit\n", text=True, check=True, timeout=300)

    from conftest import tiny_recipe

    from olive_flows.console import Console
    from olive_flows.pipeline import run_recipe
    from olive_flows.validate.load import load_recipe

    recipe = tiny_recipe(tiny_model("llama"), tmp_path / "out")
    recipe["datasets"] = {"rated": {"path": str(log), "rating": {"min": 4}, "eval_split": 0.25}}
    recipe["adapters"] = {"rated": {"dataset": "rated", "r": 4, "training": recipe["adapters"]["dates"]["training"]}}
    recipe["evaluation"]["metrics"] = {}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    import io

    result = run_recipe(load_recipe(tmp_path / "recipe.yaml"), console=Console(io.StringIO()))
    manifest = json.loads((result.packages["cpu"] / "manifest.json").read_text(encoding="utf-8"))
    assert (
        manifest["adapters"]["rated"]["dataset"]["rows"]["train"]
        + manifest["adapters"]["rated"]["dataset"]["rows"]["eval"]
        == 4
    ), "the four answers rated 4 or 5"
