"""Build hook only (metadata lives in pyproject.toml): bundle the schema and built-in recipes into the wheel.

The repository's top-level ``schemas/`` and ``recipes/`` stay the only editable copies. A wheel (and a
wheel built from the sdist, which carries both folders through MANIFEST.in) gets them under
``olive_flows/bundled/``, keeping their relative layout so a recipe's ``$schema=../schemas/...`` still
resolves. An editable install (``pip install -e .``) copies nothing: olive_flows/paths.py then reads the
top-level folders directly, so edits show up at once.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLED = "bundled"  # olive_flows/bundled/ in the built package; see olive_flows/paths.py
SOURCES = ("schemas/recipe.schema.json", "recipes")


def _bundled(relative: Path) -> bool:
    """Skip caches and hidden files (editor swap files, .DS_Store) that may sit in a checkout."""
    return (
        not any(part == "__pycache__" or part.startswith(".") for part in relative.parts) and relative.suffix != ".pyc"
    )


def _source_files() -> list[Path]:
    """Every file to bundle, relative to the project root; fails the build when a source is missing."""
    files: list[Path] = []
    for name in SOURCES:
        source = ROOT / name
        if source.is_file():
            files.append(Path(name))
        elif source.is_dir():
            files.extend(
                path.relative_to(ROOT)
                for path in sorted(source.rglob("*"))
                if path.is_file() and _bundled(path.relative_to(ROOT))
            )
        else:
            raise FileNotFoundError(f"{source} is missing: the wheel would ship without it (is MANIFEST.in complete?)")
    return files


class BuildPyWithBundle(build_py):
    """``build_py`` that also copies the schema and the recipes tree into ``olive_flows/bundled/``."""

    def _bundle_dir(self) -> Path:
        return Path(self.build_lib) / "olive_flows" / BUNDLED

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # PEP 660 editable install: paths.py falls back to the top-level folders
            return
        target = self._bundle_dir()
        if target.exists():  # a reused build/ folder: drop recipes deleted since
            shutil.rmtree(target)
        for relative in _source_files():
            destination = target / relative
            self.mkpath(str(destination.parent))
            self.copy_file(str(ROOT / relative), str(destination))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        return [*outputs, *(str(self._bundle_dir() / relative) for relative in _source_files())]


setup(cmdclass={"build_py": BuildPyWithBundle})
