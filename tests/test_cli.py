"""The olive-flows command: exit codes, and that mistakes stop a run before anything is trained."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO

from olive_flows.cli.main import main
from olive_flows.validate.load import load_recipe


def olive_flows(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "olive_flows", *args], capture_output=True, text=True, cwd=cwd)


def test_validate_builtin_recipes(capsys):
    assert main(["validate", "quickstart", "phi-lora"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "recipes/quickstart.yaml: ok (quickstart)",
        "recipes/phi-lora.yaml: ok (phi-lora)",
    ]


def test_validate_imports_no_torch():
    code = "import sys; from olive_flows.cli.main import main; main(['validate', 'quickstart']); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_typo_stops_the_run_before_training(tmp_path):
    recipe = (REPO / "recipes" / "quickstart.yaml").read_text(encoding="utf-8").replace("    r: 16", "    rank: 16", 1)
    (tmp_path / "data").symlink_to(REPO / "recipes" / "data")
    (tmp_path / "typo.yaml").write_text(recipe, encoding="utf-8")
    result = olive_flows("run", str(tmp_path / "typo.yaml"), f"output.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert result.returncode == 2
    line = recipe.splitlines().index("    rank: 16") + 1
    assert (
        f"typo.yaml:{line}:5: adapters.contacts.rank: unknown field; did you mean 'r'? (olive-flows' name for rank)"
        in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists(), "nothing may be written for an invalid recipe"


def test_unknown_recipe_suggests_a_builtin():
    result = olive_flows("validate", "quikstart")
    assert result.returncode == 2
    assert (
        "quikstart: 'quikstart' is neither a recipe file nor a built-in recipe; did you mean 'quickstart'?"
        in result.stderr
    )


def test_list_shows_builtin_recipes(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "phi-lora" in out


def test_machine_requirements_warn_at_validate_and_stop_run(tmp_path):
    overrides = ["adapters.contacts.method=qlora", "adapters.dates.method=qlora", f"output.dir={tmp_path / 'out'}"]
    checked = olive_flows("validate", "quickstart", *overrides)
    assert checked.returncode == 0, "the recipe itself is fine"
    assert "adapters.contacts.method: qlora needs a CUDA GPU to train, and this machine has none" in checked.stderr
    ran = olive_flows("run", "quickstart", *overrides)
    assert ran.returncode == 2
    assert "qlora needs a CUDA GPU to train" in ran.stderr and "Traceback" not in ran.stderr
    assert not (tmp_path / "out").exists(), "stopped before anything was written"


def test_directml_targets_are_flagged(capsys):
    assert main(["validate", "quickstart", "targets.cpu.device=dml", "targets.cpu.adapter_weights=float"]) == 0
    err = capsys.readouterr().err
    assert "warning: targets.cpu.device: onnxruntime-genai-directml cannot load .onnx_adapter files today" in err


def test_builtin_recipes_open_with_run_devices_and_time():
    from olive_flows.recipe.catalog import builtin_recipes, header

    for name, path in builtin_recipes().items():
        assert {"run", "devices", "time"} <= set(header(path)), f"{name} lacks a header line"


def test_readme_field_reference_and_target_table_are_generated():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "schema_docs.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_a_second_run_of_the_same_recipe_waits_its_turn(tmp_path, capsys):
    """While one run holds a recipe's output folder, another run of it stops at once (exit 6)."""
    from olive_flows.layout import Workspace

    recipe = load_recipe("quickstart", [f"output.dir={tmp_path}"])
    with Workspace.of(recipe).locked():
        assert main(["run", "quickstart", f"output.dir={tmp_path}"]) == 6
    err = capsys.readouterr().err
    assert "is in use by a run in progress" in err and f"pid {os.getpid()}" in err
    assert not (tmp_path / "quickstart" / "cpu").exists()


def test_serve_workers_share_the_physical_cores():
    import psutil

    from olive_flows.cli.serve_cmd import threads_per_worker

    assert threads_per_worker(1) is None, "one server process keeps the package's own threads"
    cores = psutil.cpu_count(logical=False) or os.cpu_count()
    for workers in (2, 3, 64):
        threads = threads_per_worker(workers)
        assert threads >= 1 and (threads * workers <= cores or threads == 1), (workers, threads)
