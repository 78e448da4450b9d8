"""What a run tells the person watching it.

While Olive runs, the process's stdout and stderr go to the job's log file (ModelBuilder and the
trainer print a lot). The console keeps its own handle on the terminal, so progress lines still
reach the user.
"""

from __future__ import annotations

import io
import os
import sys
import time
from typing import TextIO


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
