"""Where everything olive-flows writes lives: a recipe's output folders and the files of a package.

    <output.dir>/<recipe>/<target>/          the package of one target (its files below)
    <output.dir>/<recipe>/_data/<adapter>/   the rows an adapter trained and was evaluated on
    <output.dir>/<recipe>/_peft/<adapter>/   the trained PEFT adapter and its training log
    <output.dir>/<recipe>/_versions/<target>/<version>/  packages a later run replaced (output.keep_versions)
    <output.dir>/<recipe>/_work/data/        train/eval splits, named by content hash
    <output.dir>/<recipe>/_work/olive-cache/ Olive's pass cache (what makes re-runs fast)
    <output.dir>/<recipe>/_work/jobs/        Olive's output per target and adapter
    <output.dir>/<recipe>/_work/compiled/    the Olive configs `run` executes
    <output.dir>/<recipe>/_work/runs/<id>/   one folder per run or evaluation: logs, configs, timings
    <output.dir>/<recipe>/_work/run.lock     held by the run in progress (run.pid beside it: its process id)

Recipe, target and adapter names cannot start with '_', so no target folder can clash with these.

A package holds the base model files, ``adapters/<name>.onnx_adapter`` per adapter, ``manifest.json``,
``recipe.json`` (the resolved recipe it was built from), ``eval.json`` and ``report.md``,
``report.html`` with their plots in ``report/``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from olive_flows.paths import portable_path
from olive_flows.recipe.model import Recipe

ADAPTER_DIR = "adapters"
ADAPTER_SUFFIX = ".onnx_adapter"
MANIFEST = "manifest.json"
RESOLVED_RECIPE = "recipe.json"
EVAL = "eval.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
REPORT_PLOTS = "report"
TRAINING_LOG = "training_log.json"  # beside a trained PEFT adapter: the trainer's logged steps


def adapter_file(package: Path, adapter: str) -> Path:
    """Where adapter ``adapter`` of the package in ``package`` is stored."""
    return package / ADAPTER_DIR / f"{adapter}{ADAPTER_SUFFIX}"


def adapter_files(package: Path) -> dict[str, Path]:
    """Every adapter file of a package by adapter name, in name order."""
    return {
        path.name.removesuffix(ADAPTER_SUFFIX): path
        for path in sorted((package / ADAPTER_DIR).glob(f"*{ADAPTER_SUFFIX}"))
    }


def is_package(folder: Path) -> bool:
    """Whether ``folder`` is a built package (it has a manifest)."""
    return (folder / MANIFEST).is_file()


class RunInProgress(Exception):
    """Another process is running the same recipe into the same output folder."""

    exit_code = 6


@dataclass(frozen=True)
class Workspace:
    """The folders of one recipe's output."""

    root: Path

    @classmethod
    def of(cls, recipe: Recipe) -> Workspace:
        return cls(portable_path(recipe.data["output"]["dir"]).resolve() / recipe.name)

    @property
    def work(self) -> Path:
        return self.root / "_work"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the recipe's run lock for the block: two runs writing the same packages, caches and
        job folders at once would corrupt each other. filelock takes it with the OS's own file lock
        (flock on Linux and macOS, msvcrt's on Windows), which the OS releases if the process dies.
        The holder's pid goes in run.pid: trying the lock truncates run.lock itself."""
        self.work.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.work / "run.lock", blocking=False)
        pid_file = self.work / "run.pid"
        try:
            lock.acquire()
        except Timeout:
            holder = pid_file.read_text(encoding="utf-8").strip() if pid_file.is_file() else ""
            raise RunInProgress(
                f"{self.root} is in use by a run in progress (pid {holder or 'unknown'}); wait for it or stop it"
            ) from None
        try:
            pid_file.write_text(str(os.getpid()), encoding="utf-8")
            yield
        finally:
            lock.release()

    @property
    def data(self) -> Path:
        return self.work / "data"

    @property
    def olive_cache(self) -> Path:
        return self.work / "olive-cache"

    @property
    def published(self) -> Path:
        """The plan fingerprint of the run that last wrote the _data/ and _peft/ copies, and their file tables."""
        return self.work / "published.json"

    @property
    def compiled(self) -> Path:
        return self.work / "compiled"

    @property
    def runs(self) -> Path:
        return self.work / "runs"

    def new_run(self, kind: str = "") -> Path:
        """A fresh run folder, named by the time (``kind`` is appended, as in ``-eval``)."""
        folder = self.runs / (time.strftime("%Y%m%d-%H%M%S") + kind)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def job(self, target: str, adapter: str) -> Path:
        return self.work / "jobs" / target / adapter

    def package(self, target: str) -> Path:
        return self.root / target

    def versions(self, target: str) -> Path:
        return self.root / "_versions" / target

    def audit(self, adapter: str) -> Path:
        return self.root / "_data" / adapter

    def peft(self, adapter: str) -> Path:
        return self.root / "_peft" / adapter
