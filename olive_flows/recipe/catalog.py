"""The built-in recipes in recipes/, and the header each one opens with.

Every built-in recipe starts with comment lines such as ``# Run: ...``, ``# Devices: ...`` and
``# Time: ...``; `olive-flows list` shows them, so the recipe file is the only place they live.
"""

from __future__ import annotations

import re
from pathlib import Path

from olive_flows.paths import RECIPES_DIR

HEADER_LINE = re.compile(r"^#\s*(\w+):\s*(.+?)\s*$")


def builtin_recipes() -> dict[str, Path]:
    """Built-in recipe names and their files (recipes/*.yaml)."""
    return {path.stem: path for path in sorted(RECIPES_DIR.glob("*.yaml"))}


def header(path: Path) -> dict[str, str]:
    """``Key: value`` pairs of the comment block a recipe file opens with (keys lower-cased)."""
    found: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                break
            match = HEADER_LINE.match(line)
            if match:
                found.setdefault(match.group(1).lower(), match.group(2))
    return found
