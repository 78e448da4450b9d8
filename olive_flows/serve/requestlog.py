"""The request log (``serve --log FILE``): one JSON line per answered request, and one per rating.

An exchange is written as a chat-format row (the request's messages followed by the answer as the
assistant's turn; a text completion as ``prompt`` and ``completion``) with its id, model, adapter,
token counts and timings, so the file is a dataset a recipe can read as it is. A rating
(``POST /v1/feedback``) is its own line, ``{"feedback": {"id", "rating", "comment"}}``, which the
dataset reader folds into the exchange with that id: the server keeps no state, several processes
or replicas can append to one file (each line is one ``write`` on a file opened for appending) or
to their own files, which concatenate.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any


def exchange(
    ident: str,
    kind: str,
    model: str,
    adapter: str | None,
    conversation: dict[str, Any],
    usage: dict[str, int],
    finish_reason: str,
    sampling: dict[str, Any],
    timings: dict[str, float | None],
) -> dict[str, Any]:
    """One answered request as a log line: ``conversation`` (``messages`` ending with the answer, or
    ``prompt`` and ``completion``) and what produced it. ``serve`` and ``chat --log`` write the same."""
    return {
        **conversation,
        "id": ident,
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "adapter": adapter,
        "finish_reason": finish_reason,
        "usage": usage,
        "sampling": sampling,
        "timings": {k: None if v is None else round(v, 4) for k, v in timings.items()},
    }


def feedback(ident: str, rating: int, comment: str | None = None) -> dict[str, Any]:
    """A rating of the exchange ``ident`` as a log line of its own."""
    rated = {"id": ident, "rating": rating, **({"comment": comment} if comment else {})}
    return {"feedback": rated, "created": int(time.time())}


class RequestLog:
    """Appends lines to ``path``; a line is written whole or, after a crash, torn at the end only."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            os.write(self._fd, line)

    def close(self) -> None:
        os.close(self._fd)
