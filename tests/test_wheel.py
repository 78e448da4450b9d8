"""The built wheel works without a checkout: schema, built-in recipes and their data ship inside it.

Builds an sdist from a copy of the checkout, a wheel from that sdist (what `pip install olive-flows`
does), installs the wheel into a fresh virtual environment outside the checkout and runs the
installed `olive-flows` from a folder outside the checkout. Nothing is downloaded: the fresh
environment borrows this environment's dependencies through a .pth file, and the build uses this
environment's setuptools (--no-build-isolation).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO

BUNDLE = "olive_flows/bundled"
# What a build does not need and a checkout may hold (large or machine-specific).
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "venv", "outputs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)


def run(*command, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd, env=env)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}"
    return result


def bundled_sources() -> set[str]:
    """The files the wheel must carry, as paths inside it."""
    files = {f"{BUNDLE}/schemas/recipe.schema.json"}
    for path in (REPO / "recipes").rglob("*"):
        relative = path.relative_to(REPO)
        if path.is_file() and not any(part == "__pycache__" or part.startswith(".") for part in relative.parts):
            files.add(f"{BUNDLE}/{relative.as_posix()}")
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """sdist from a copy of the checkout (so no build/ or egg-info lands in it), then a wheel from the sdist."""
    work = tmp_path_factory.mktemp("wheel-build")
    source = work / "checkout"
    shutil.copytree(REPO, source, ignore=NOT_COPIED, symlinks=True)
    code = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    name = run(sys.executable, "-c", code, work / "sdist", cwd=source).stdout.strip().splitlines()[-1]
    with tarfile.open(work / "sdist" / name) as sdist:
        members = {member.split("/", 1)[1] for member in sdist.getnames() if "/" in member}
        sdist.extractall(work, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    for needed in ("setup.py", "schemas/recipe.schema.json", "recipes/quickstart.yaml"):
        assert needed in members, f"the sdist lacks {needed} (MANIFEST.in)"

    unpacked = work / name.removesuffix(".tar.gz")
    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check")
    run(*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", work / "dist", unpacked, cwd=work)
    (built,) = (work / "dist").glob("olive_flows-*.whl")
    return built


def test_wheel_carries_schema_and_recipes(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(bundled_sources() - names)
    assert not missing, f"the wheel lacks {missing}: setup.py's build_py did not bundle them"


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict[str, Path]:
    """A fresh venv outside the checkout with only the wheel installed; dependencies come from this .venv."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv.parent)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    code = "import sysconfig; print(sysconfig.get_path('purelib')); print(sysconfig.get_path('scripts'))"
    purelib, scripts = (Path(line) for line in run(python, "-c", code, cwd=venv).stdout.splitlines())
    # Install before the .pth exists: pip must neither see nor touch this environment's editable olive_flows.
    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", python)
    run(*pip, "install", "-q", "--no-deps", "--no-index", wheel, cwd=venv)

    # Plain paths in a .pth are appended after the fresh site-packages and their own .pth files are not
    # run, so this environment's editable finder for olive_flows stays out.
    borrowed = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (purelib / "zz_borrowed_dependencies.pth").write_text("".join(f"{path}\n" for path in borrowed), encoding="utf-8")
    return {"venv": venv, "python": python, "scripts": scripts}


@pytest.fixture
def cli(installed, tmp_path):
    """Run the installed olive-flows from an empty folder outside the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["OLIVE_FLOWS_CACHE"] = str(tmp_path / "cache")
    executable = installed["scripts"] / ("olive-flows.exe" if os.name == "nt" else "olive-flows")

    def olive_flows(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(executable), *args], capture_output=True, text=True, cwd=tmp_path, env=env)

    return olive_flows


def inside(path: Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


def test_fresh_env_imports_the_installed_package(installed):
    code = (
        "import olive_flows, olive_flows.paths as p; "
        "print(olive_flows.__file__); print(p.SCHEMA_PATH); print(p.RECIPES_DIR); print(p.SCHEMA_PATH.is_file())"
    )
    result = run(installed["python"], "-c", code, cwd=installed["venv"].parent)
    module, schema, recipes, schema_exists = result.stdout.splitlines()
    assert inside(module, installed["venv"]), f"imported {module}, not the wheel installed in the fresh venv"
    assert inside(schema, installed["venv"]) and schema_exists == "True", f"schema at {schema} (bundle missing?)"
    assert inside(recipes, installed["venv"]), f"recipes at {recipes} (bundle missing?)"


def test_list_names_the_builtin_recipes(cli):
    result = cli("list")
    assert result.returncode == 0, result.stderr
    names = {line.split()[0] for line in result.stdout.splitlines()[1:] if line.strip()}
    assert names == {path.stem for path in (REPO / "recipes").glob("*.yaml")}, result.stdout


def test_validate_builtin_recipe(cli, installed):
    result = cli("validate", "quickstart")
    assert result.returncode == 0, result.stderr
    path, _, verdict = result.stdout.strip().partition(": ")
    assert verdict == "ok (quickstart)", result.stdout
    assert inside(path, installed["venv"]), f"validated {path}, not the bundled recipe"


def test_show_resolves_data_inside_the_package(cli, installed):
    result = cli("show", "quickstart")
    assert result.returncode == 0, result.stderr
    header, _, body = result.stdout.partition("\n")
    assert header.startswith("# ") and ", resolved" in header, header
    recipe_path = Path(header[2:].partition(", resolved")[0])
    assert inside(recipe_path, installed["venv"]), f"showed {recipe_path}, not the bundled recipe"

    resolved = yaml.safe_load(body)
    assert resolved["name"] == "quickstart"
    assert resolved["datasets"], "quickstart has datasets"
    for name, dataset in resolved["datasets"].items():
        data = recipe_path.parent / dataset["path"]
        assert data.is_file(), f"dataset {name}: {data} is not in the installed package"
        assert inside(data, installed["venv"])
