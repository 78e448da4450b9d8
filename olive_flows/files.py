"""Small file helpers: content hashes and writes that never leave a half-written file behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from olive_flows.paths import display_path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_jsonl(path: Path, limit: int | None = None) -> list[Any]:
    """The rows of a JSON Lines file (the first ``limit`` of them when given); blank lines are skipped."""
    rows: list[Any] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(rows) >= limit:
                break
            if line.strip():
                rows.append(json.loads(line))
    return rows


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON with sorted keys."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class FolderInUse(Exception):
    """A folder could not be moved because a program holds a file in it open: Windows refuses to
    rename such a folder (Linux and macOS do not). The CLI exits with code 6, as for a run in progress."""

    exit_code = 6


MOVE_ATTEMPTS = 5  # Windows: a virus scanner or the search indexer holds a new file for a moment


def move_dir(source: Path, destination: Path) -> None:
    """Rename the folder ``source`` to ``destination`` (which must not exist), retried for a second
    while Windows says a file in it is in use; FolderInUse if it still is."""
    for attempt in range(MOVE_ATTEMPTS):
        try:
            os.replace(source, destination)
            return
        except PermissionError as error:
            if attempt == MOVE_ATTEMPTS - 1:
                raise FolderInUse(f"{display_path(source)} is in use by another program ({error.strerror})") from error
            time.sleep(0.05 * 2**attempt)


def replace_dir(staging: Path, final: Path, previous: Path | None = None) -> None:
    """Put the complete folder ``staging`` at ``final``. A previous ``final`` moves to ``previous``
    (which must not exist), or with None is removed once the new one is in place; it stays as it was
    if it cannot be moved away (FolderInUse), and goes back if the new one cannot move in."""
    old = previous or final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        move_dir(final, old)
    try:
        move_dir(staging, final)
    except BaseException:
        if old.exists():
            move_dir(old, final)
        raise
    if previous is None:
        shutil.rmtree(old, ignore_errors=True)


def staging_dir(final: Path) -> Path:
    """A fresh, empty folder beside ``final`` to assemble its next version in."""
    staging = final.with_name(f".{final.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    return staging
