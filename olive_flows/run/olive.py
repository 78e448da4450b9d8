"""Run one compiled Olive workflow in-process and turn Olive's quiet failures into real errors.

Olive does not raise when a pass is pruned or rejected: it logs "No output model produced" and
returns. This module watches Olive's log records to know which pass was running and why it was
pruned, sends everything Olive, ModelBuilder and the trainer print to the job's log file, and
raises PassFailed naming the pass, the reason and the log.
"""

from __future__ import annotations

import copy
import logging
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from olive_flows.capture import output_to
from olive_flows.plugins import package_config

LOG_TAIL_LINES = 40


class PassFailed(Exception):
    """An Olive pass failed or was pruned; the CLI exits with code 3."""

    exit_code = 3

    def __init__(self, job: str, pass_name: str, reason: str, log_path: Path):
        self.pass_name, self.reason, self.log_path = pass_name, reason, log_path
        tail = "\n".join(_tail(log_path, LOG_TAIL_LINES))
        super().__init__(
            f"{job}: pass '{pass_name}' failed: {reason}\n"
            f"--- last {LOG_TAIL_LINES} lines of {log_path} ---\n{tail}\n--- end of log ---"
        )


def _tail(path: Path, lines: int) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []


# Called as (event, pass name, seconds) when a pass starts ("start", 0), comes from Olive's cache
# ("cached", 0) or finishes running ("done", its run time).
PassEvents = Callable[[str, str, float], None]


class _PassWatcher(logging.Handler):
    """Remembers the pass Olive is running and the last reason it gave for a prune or failure, and
    reports when each pass starts, comes from the cache or finishes."""

    def __init__(self, on_pass: PassEvents | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.current_pass: str | None = None
        self.pruned_pass: str | None = None
        self.reasons: list[str] = []
        self.on_pass = on_pass or (lambda event, name, seconds: None)

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.msg if isinstance(record.msg, str) else ""
        if msg.startswith("Running pass") and record.args:
            self.current_pass = str(record.args[0])
            self.reasons.clear()
            self.on_pass("start", self.current_pass, 0.0)
        elif msg.startswith("Loaded model from cache") and self.current_pass:
            self.on_pass("cached", self.current_pass, 0.0)
        elif msg.startswith("Pass %s:%s finished in") and record.args:
            self.on_pass("done", str(record.args[0]), float(record.args[2]))
        elif msg.startswith("Flow %s is pruned") and record.args:
            self.pruned_pass = str(record.args[1])
        elif (
            record.levelno >= logging.INFO and record.name.startswith("olive.passes")
        ) or record.levelno >= logging.ERROR:
            self.reasons.append(record.getMessage())


def telemetry_off() -> None:
    """Turn Olive's telemetry off before it sends anything.

    Olive 0.13 queues a heartbeat event before it reads OLIVE_DISABLE_TELEMETRY, so the event
    would still be sent at exit (and offline the process waits about 10 s trying). Creating its
    telemetry singleton once with the heartbeat suppressed leaves it disabled and empty.
    """
    os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
    from olive.telemetry.telemetry import Telemetry

    if Telemetry._instance is not None:
        return
    heartbeat = Telemetry._log_heartbeat
    Telemetry._log_heartbeat = lambda self, *args, **kwargs: None
    try:
        Telemetry()
    finally:
        Telemetry._log_heartbeat = heartbeat


def run_workflow(job_name: str, config: dict[str, Any], log_path: Path, on_pass: PassEvents | None = None) -> Path:
    """Run ``config`` with Olive and return the folder holding the output model; ``on_pass`` hears
    about each pass as it starts, is taken from the cache or finishes."""
    telemetry_off()
    from olive.workflows import run as olive_run

    watcher = _PassWatcher(on_pass)
    olive_logger = logging.getLogger("olive")
    olive_logger.addHandler(watcher)
    try:
        with output_to(log_path):
            try:
                output = olive_run(copy.deepcopy(config), package_config=package_config())  # Olive rewrites the dict
            except Exception as exc:  # any error inside Olive becomes a PassFailed that shows its log
                traceback.print_exc()  # stderr is the log file here
                where = watcher.current_pass or "workflow setup"
                raise PassFailed(job_name, where, f"{type(exc).__name__}: {exc}", log_path) from exc
    finally:
        olive_logger.removeHandler(watcher)
    if not output.has_output_model():
        pass_name = watcher.pruned_pass or watcher.current_pass or "workflow setup"
        reason = "; ".join(watcher.reasons) or "Olive produced no output model"
        raise PassFailed(job_name, pass_name, f"pruned: {reason}", log_path)
    return Path(output.get_best_candidate().model_path)
