"""What a run tells the person watching it.

While Olive runs, the process's stdout and stderr go to the job's log file (ModelBuilder and the
trainer print a lot). The console keeps its own handle on the terminal, so progress lines still
reach the user. Long steps (training, export, evaluation) show their progress with a rate and an
ETA: a live tqdm bar on a terminal, a plain line now and then elsewhere (CI logs, pipes).
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import time
from typing import Any, TextIO


def _terminal() -> TextIO:
    """A handle on the current stdout that survives later redirection of file descriptor 1."""
    try:
        return os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")
    except (AttributeError, OSError, io.UnsupportedOperation):  # stdout is not a file (captured)
        return sys.stdout


class Console:
    """Short, timestamped progress lines on the terminal the run was started from."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or _terminal()
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        elapsed = int(time.monotonic() - self.started)
        self.stream.write(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {text}\n")
        self.stream.flush()

    def detail(self, text: str) -> None:
        self.stream.write(f"        {text}\n")
        self.stream.flush()

    @property
    def is_terminal(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):
            return False

    def progress(self, label: str, total: int, unit: str, done: int = 0) -> Progress:
        """Progress of a step of ``total`` ``unit``s, ``done`` of them already (a resumed training)."""
        return Progress(self, label, total, unit, done)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


class Progress:
    """One step's progress: count, rate and ETA. On a terminal a tqdm bar; elsewhere a plain line each
    time another PLAIN_SHARE of the work is done or PLAIN_SECONDS have passed, and one at the end."""

    PLAIN_SHARE = 0.25
    PLAIN_SECONDS = 30.0

    def __init__(self, console: Console, label: str, total: int, unit: str, done: int = 0):
        self.console, self.label, self.total, self.unit = console, label, max(1, total), unit
        self.done = self.first = done
        self.note = ""
        self.started = self.shown_at = time.monotonic()
        self.shown = done
        self.bar: Any = None
        if console.is_terminal:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total,
                initial=done,
                desc=f"        {label}",
                unit=unit,
                file=console.stream,
                ncols=min(120, shutil.get_terminal_size((100, 24)).columns),  # a terminal that reports 0 columns too
                leave=True,
            )

    def update(self, count: int = 1, note: str | None = None) -> None:
        """``count`` more units done; ``note`` (such as the latest loss) is shown beside the count."""
        self.done = min(self.total, self.done + count)
        if note is not None:
            self.note = note
        if self.bar is not None:
            if note is not None:
                self.bar.set_postfix_str(note, refresh=False)
            self.bar.update(count)
            return
        now = time.monotonic()
        if self.done - self.shown >= self.PLAIN_SHARE * self.total or now - self.shown_at >= self.PLAIN_SECONDS:
            self.shown, self.shown_at = self.done, now
            if self.done < self.total:
                self.console.detail(self._line(now))

    def write(self, text: str) -> None:
        """A line of its own (a held-out loss, say) that does not break the bar."""
        if self.bar is not None:
            self.bar.write(f"        {text}", file=self.console.stream)
        else:
            self.console.detail(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            return
        elapsed = time.monotonic() - self.started
        rate = (self.done - self.first) / elapsed if elapsed > 0 else 0.0
        note = f"  {self.note}" if self.note else ""
        self.console.detail(
            f"{self.label}: {self.done}/{self.total} {self.unit} in {_clock(elapsed)} ({rate:.2f} {self.unit}/s){note}"
        )

    def _line(self, now: float) -> str:
        elapsed = now - self.started
        rate = (self.done - self.first) / elapsed if elapsed > 0 else 0.0
        eta = _clock((self.total - self.done) / rate) if rate > 0 else "?"
        note = f"  {self.note}" if self.note else ""
        return (
            f"{self.label}: {self.done}/{self.total} {self.unit} ({self.done / self.total:.0%}), "
            f"{rate:.2f} {self.unit}/s, ETA {eta}{note}"
        )
