"""What Windows and macOS need of olive-flows, exercised here on Linux: nothing POSIX-only at import
time, the run lock through filelock, a package swap that leaves the current package intact when
Windows refuses to move a folder in use, and recipes and data written on Windows (CRLF line ends, a
byte order mark, backslashes in relative paths) read with the right line numbers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import REPO, chat, minimal_recipe, tiny_recipe, write_recipe
from test_data import MALFORMED
from test_invalid_recipes import CASES, CORPUS

from olive_flows.cli.main import main
from olive_flows.data.prepare import normalize_rows
from olive_flows.data.sources import iter_local
from olive_flows.files import FolderInUse, replace_dir
from olive_flows.layout import is_package
from olive_flows.package.versions import promote
from olive_flows.problems import UserError
from olive_flows.validate.load import load_recipe

WINDOWS_TEXT = {"newline": "\r\n", "encoding": "utf-8-sig"}  # what Notepad and most Windows editors write


def test_every_module_imports_without_fcntl():
    """Windows has no fcntl: import each module of the package with it hidden. (Other POSIX-only
    modules cannot be hidden here: torch and transformers import them on Linux, and others on Windows.)"""
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        sys.modules["fcntl"] = None  # import raises ImportError, as on Windows
        import olive_flows
        names = [m.name for m in pkgutil.walk_packages(olive_flows.__path__, "olive_flows.")]
        names = [name for name in names if not name.endswith("__main__")]  # that one runs the CLI
        for name in names:
            importlib.import_module(name)
        print(len(names))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) > 80, "every module of the package was imported"


def test_the_run_lock_names_its_holder_and_is_released_when_it_dies(tmp_path, capsys):
    """Another process holds the lock: a run stops with exit code 6 and its pid; once that process is
    killed (no chance to clean up), the lock is free."""
    holder = textwrap.dedent(
        f"""
        import sys, time
        from olive_flows.validate.load import load_recipe
        from olive_flows.layout import Workspace
        with Workspace.of(load_recipe("quickstart", ["output.dir={tmp_path}"])).locked():
            print("locked", flush=True)
            time.sleep(120)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert process.stdout.readline().strip() == "locked"
        assert main(["run", "quickstart", f"output.dir={tmp_path}"]) == 6
        assert f"is in use by a run in progress (pid {process.pid})" in capsys.readouterr().err
    finally:
        process.kill()
        process.wait(timeout=30)
    from olive_flows.layout import Workspace

    with Workspace.of(load_recipe("quickstart", [f"output.dir={tmp_path}"])).locked():
        assert (tmp_path / "quickstart" / "_work" / "run.pid").read_text(encoding="utf-8") == str(os.getpid())


def fake_package(folder: Path, label: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"inputs_sha256": label * 8}), encoding="utf-8")
    (folder / "model.onnx").write_text(label, encoding="utf-8")
    return folder


def refuse_to_move(monkeypatch, refused: Path) -> None:
    """os.replace as on Windows while a program holds a file in ``refused`` open."""
    original = os.replace

    def replace(source, destination):
        if Path(source) == refused:
            raise PermissionError(13, "The process cannot access the file because it is being used by another process")
        return original(source, destination)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("keep", [0, 2])
def test_a_package_in_use_on_windows_stays_and_the_new_one_waits(tmp_path, monkeypatch, keep):
    current = fake_package(tmp_path / "cpu", "old")
    staging = fake_package(tmp_path / ".cpu.staging-1", "new")
    refuse_to_move(monkeypatch, current)
    with pytest.raises(FolderInUse, match=r"cpu is in use by another program \(The process cannot access"):
        promote(staging, current, tmp_path / "_versions" / "cpu", keep)
    assert (current / "model.onnx").read_text(encoding="utf-8") == "old", "the current package is untouched"
    assert (staging / "model.onnx").read_text(encoding="utf-8") == "new", "the new package is still there"
    monkeypatch.undo()
    promote(staging, current, tmp_path / "_versions" / "cpu", keep)
    assert (current / "model.onnx").read_text(encoding="utf-8") == "new" and not staging.exists()
    kept = list((tmp_path / "_versions" / "cpu").glob("*")) if keep else []
    assert len(kept) == (1 if keep else 0) and all(is_package(k) for k in kept)


def test_a_new_folder_that_cannot_move_in_puts_the_current_one_back(tmp_path, monkeypatch):
    current = fake_package(tmp_path / "cpu", "old")
    staging = fake_package(tmp_path / ".cpu.staging-1", "new")
    refuse_to_move(monkeypatch, staging)
    with pytest.raises(FolderInUse):
        replace_dir(staging, current)
    assert (current / "model.onnx").read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cpu.staging-1", "cpu"], "nothing left half-moved"


def test_a_loaded_package_keeps_generating_while_a_new_one_is_promoted(tiny_package, tmp_path):
    """Linux and macOS: a chat or server holding the package keeps running it after a run replaces it."""
    from olive_flows.evaluate.runtime import PackageRuntime

    current = shutil.copytree(tiny_package, tmp_path / "cpu")
    runtime = PackageRuntime(current)
    staging = shutil.copytree(tiny_package, tmp_path / ".cpu.staging-1")
    promote(staging, current, tmp_path / "_versions" / "cpu", 1)
    assert list((tmp_path / "_versions" / "cpu").iterdir()), "the replaced package was kept"
    messages = [{"role": "user", "content": "5 March 2021"}]
    assert runtime.generate(messages, "dates", 4) == PackageRuntime(current).generate(messages, "dates", 4)


def test_recipes_written_on_windows_report_the_same_lines(tmp_path, monkeypatch):
    """The invalid-recipe corpus saved with CRLF line ends and a BOM: the same problems at the same
    lines and columns, for every recipe of it."""
    corpus = shutil.copytree(CORPUS, tmp_path / "invalid")
    for recipe in corpus.glob("*.yaml"):
        recipe.write_text(recipe.read_text(encoding="utf-8"), **WINDOWS_TEXT)
    assert (corpus / CASES[0].name).read_bytes().startswith(b"\xef\xbb\xbf")
    monkeypatch.chdir(corpus)
    for path in CASES:
        expected = [
            line.removeprefix("# expect: ")
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.startswith("# expect: ")
        ]
        with pytest.raises(UserError) as info:
            load_recipe(path.name)
        assert info.value.text.splitlines() == expected, path.name


def test_windows_data_files_read_with_the_right_lines(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.jsonl").write_text("\n".join(MALFORMED) + "\n", **WINDOWS_TEXT)
    with pytest.raises(UserError) as info:
        normalize_rows(iter_local(tmp_path / "d.jsonl"), {"format": "chat"})
    lines = [p.location.line for p in info.value.problems]
    assert lines == [2, 3, 5, 6, 7, 8], "the BOM is not row 1's problem, and CRLF counts one line"
    (tmp_path / "rows.csv").write_text("prompt,completion\nq1,a1\nq2,a2\n", **WINDOWS_TEXT)
    rows = [(where.line, row) for where, row in iter_local(tmp_path / "rows.csv")]
    assert rows == [(2, {"prompt": "q1", "completion": "a1"}), (3, {"prompt": "q2", "completion": "a2"})]
    (tmp_path / "rows.json").write_text(json.dumps([chat("q")]), **WINDOWS_TEXT)
    assert [row for _, row in iter_local(tmp_path / "rows.json")] == [chat("q")]


def test_backslash_paths_in_a_recipe_name_the_same_files(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "d.jsonl").write_text(json.dumps(chat("q")) + "\n", encoding="utf-8")
    recipe = minimal_recipe(datasets={"d": {"path": "data\\d.jsonl"}}, output={"dir": "out\\runs"})
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe), **WINDOWS_TEXT)
    loaded = load_recipe(tmp_path / "recipe.yaml")
    assert loaded.data_file("d") == tmp_path / "data" / "d.jsonl"
    from olive_flows.layout import Workspace

    assert Workspace.of(loaded).root.parent == Path.cwd() / "out" / "runs"


@pytest.mark.slow
def test_a_run_whose_package_is_in_use_on_windows_keeps_both(tiny_model, tmp_path, monkeypatch, capsys):
    """The run builds and checks the new package, cannot move the current one (Windows: a chat or
    server holds it), and exits with code 6: the current package is untouched, the new one kept as a
    candidate, and the message says which folder and what to do."""
    path = write_recipe(tmp_path, tiny_recipe(tiny_model("llama"), tmp_path / "out"))
    assert main(["run", str(path)]) == 0
    current = tmp_path / "out" / "tiny" / "cpu"
    before = (current / "manifest.json").read_text(encoding="utf-8")
    capsys.readouterr()
    refuse_to_move(monkeypatch, current)
    assert main(["run", str(path), "adapters.dates.training.max_steps=4"]) == 6
    err = capsys.readouterr().err
    assert "package cpu: not replaced" in err and "cpu is in use by another program" in err, err
    assert "stop the chat or server that runs it and run again" in err
    assert (current / "manifest.json").read_text(encoding="utf-8") == before
    [candidate] = (tmp_path / "out" / "tiny" / "_versions" / "cpu").glob("*-candidate")
    assert is_package(candidate) and (candidate / "eval.json").is_file()
    assert not list(current.parent.glob(".cpu.*")), "no staging or half-moved folder is left"
