"""The package's layout follows the flow: a stage imports the stages before it, never one after it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "olive_flows"
# Lowest first. Shared vocabulary sits at the ground floor; the stages follow the flow
# recipe -> validate -> compile -> run -> package -> evaluate -> serve; the pipeline and the CLI drive them all.
FLOORS = [
    {"paths", "files", "problems", "console", "capture", "callbacks", "metadata", "world"},
    {"recipe"},
    {"models", "data"},
    {"validate"},
    {"layout", "plugins"},
    {"compile"},
    {"run"},
    {"package"},
    {"evaluate"},
    {"serve"},
    {"pipeline"},
    {"sweep"},
    {"cli", "__main__"},
]
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}


def unit(module: str) -> str:
    """The top-level part of olive_flows a module belongs to (a sub-package or a module)."""
    return module.split(".")[1]


def imports() -> list[tuple[str, str, str]]:
    """(importing file, its unit, imported unit) for every import of another part of olive_flows."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        source = unit(".".join(parts)) if len(parts) > 1 else parts[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("olive_flows."):
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("olive_flows.")]
            found += [(str(path.relative_to(PACKAGE.parent)), source, unit(n)) for n in names if unit(n) != source]
    return found


def test_every_part_of_the_package_has_a_floor():
    parts = {p.stem for p in PACKAGE.glob("*.py")} | {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert parts - {"__init__"} == set(FLOOR)


def test_no_import_runs_against_the_flow():
    against = [
        f"{path}: {source} imports {target}" for path, source, target in imports() if FLOOR[target] > FLOOR[source]
    ]
    assert against == []
