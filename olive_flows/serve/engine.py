"""Generation for the server: the package loaded once, each request its own generator and adapter.

onnxruntime-genai holds Python's GIL while it computes a token, so generations in one process take
turns token by token (a new request does not wait for a long one to finish); more throughput comes
from more processes (``serve --workers``). Each generation runs in a thread of its own slot and hands
its text to the event loop; a request that goes away (a client that disconnects, a server that shuts down)
sets its cancel flag and the thread stops before its next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from olive_flows.evaluate.runtime import PackageRuntime, Sampling
from olive_flows.serve.errors import ApiError

RETRY_AFTER_S = 2
# Pieces a generation may run ahead of its request: the thread waits for the request to take them,
# so a request that stops (a client gone) stops its generation at once, and generations cannot
# outrun the event loop that sends their text.
AHEAD = 4


@dataclass
class Job:
    """One generation: its prompt tokens, adapter, limits and, as it runs, its result."""

    tokens: list[int]
    adapter: str | None
    max_new_tokens: int
    sampling: Sampling
    stops: list[str] = field(default_factory=list)
    completion_tokens: int = 0
    finish_reason: str = "length"
    queued_s: float = 0.0
    first_token_s: float | None = None
    total_s: float = 0.0


class StopMatcher:
    """Text up to the first stop sequence, released as soon as no stop sequence can start in it."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The text that is now certain to be part of the answer."""
        self.held += piece
        found = [i for i in (self.held.find(s) for s in self.stops) if i >= 0]
        if found:
            self.stopped = True
            text, self.held = self.held[: min(found)], ""
            return text
        keep = max((self._partial(s) for s in self.stops), default=0)
        text, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        return text

    def _partial(self, stop: str) -> int:
        """Length of the longest end of the held text that begins ``stop``."""
        for size in range(min(len(stop) - 1, len(self.held)), 0, -1):
            if self.held.endswith(stop[:size]):
                return size
        return 0

    def flush(self) -> str:
        text, self.held = self.held, ""
        return text


class Engine:
    """A package and its adapters behind an admission limit: ``parallel`` generations at once, up to
    ``max_queue`` more waiting; beyond that a request is a 503 with Retry-After."""

    def __init__(self, package: Path, threads: int | None = None, parallel: int = 4, max_queue: int = 16):
        self.runtime = PackageRuntime(package, threads=threads, arena=False)
        self.parallel = parallel
        self.max_queue = max_queue
        self.running = 0
        self.waiting = 0
        self._slots: asyncio.Semaphore | None = None
        # One long-lived thread per slot: a new thread per request would give the C allocator a new
        # arena each time, and resident memory would creep up.
        self._threads = ThreadPoolExecutor(parallel, thread_name_prefix="olive-flows-generate")
        self._cancels: set[threading.Event] = set()

    def prompt_tokens(self, messages: list[dict[str, str]] | None = None, text: str | None = None) -> list[int]:
        if messages is not None:
            return self.runtime.prompt_tokens(messages)
        return list(self.runtime.tokenizer.encode(text or ""))

    def budget(self, prompt: int, asked: int | None) -> int:
        """New tokens a request may generate: what it asked for, or the rest of the context; a prompt
        or a request that does not fit the model's context is a 400 that gives both lengths."""
        context = self.runtime.context_length
        if prompt >= context:
            raise ApiError(
                400,
                f"The prompt is {prompt} tokens, and this model's context length is {context} tokens",
                param="messages",
                code="context_length_exceeded",
            )
        if asked is not None and prompt + asked > context:
            raise ApiError(
                400,
                f"This model's context length is {context} tokens; the request asks for {prompt + asked} "
                f"({prompt} in the prompt, {asked} to generate)",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return asked if asked is not None else context - prompt

    def check_capacity(self) -> None:
        """A 503 with Retry-After when every slot is taken and the queue is full."""
        if self.running >= self.parallel and self.waiting >= self.max_queue:
            raise ApiError(
                503,
                f"The server is busy: {self.running} requests generating and {self.waiting} waiting; retry later",
                code="server_busy",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``parallel`` generation slots for the block."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.parallel)
        self.check_capacity()
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()

    async def generate(self, job: Job) -> AsyncIterator[str]:
        """The answer's text as it is generated, up to the first stop sequence. Closing the iterator
        before the end (a client gone) stops the generation."""
        started = time.perf_counter()
        async with self.slot():
            job.queued_s = time.perf_counter() - started
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[tuple[str, str | BaseException | None]] = asyncio.Queue()
            cancel = threading.Event()
            self._cancels.add(cancel)

            def put(kind: str, value: str | BaseException | None) -> None:
                with contextlib.suppress(RuntimeError):  # the loop closed: the server has shut down
                    loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

            credit = threading.Semaphore(AHEAD)

            def work() -> None:
                try:
                    for piece in self._pieces(job, cancel):
                        while not credit.acquire(timeout=0.1):  # the request has not taken the last pieces
                            if cancel.is_set():
                                return
                        put("text", piece)
                    put("end", None)
                except BaseException as exc:  # handed to the request, which answers with a 500
                    put("error", exc)

            self._threads.submit(work)
            try:
                while True:
                    kind, value = await queue.get()
                    if kind == "end":
                        break
                    if kind == "error":
                        raise value  # type: ignore[misc]
                    credit.release()
                    if job.first_token_s is None:
                        job.first_token_s = time.perf_counter() - started
                    yield value  # type: ignore[misc]
            finally:
                cancel.set()
                self._cancels.discard(cancel)
                job.total_s = time.perf_counter() - started

    def _pieces(self, job: Job, cancel: threading.Event) -> Iterator[str]:
        """Runs in the generation's thread: the runtime's pieces through the stop sequences."""
        matcher = StopMatcher(job.stops)
        decoding = self.runtime.decode(job.tokens, job.adapter, job.max_new_tokens, job.sampling)
        try:
            for piece in decoding:
                if cancel.is_set():
                    job.finish_reason = "cancelled"
                    return
                job.completion_tokens += 1
                text = matcher.feed(piece)
                if text:
                    yield text
                if matcher.stopped:
                    job.finish_reason = "stop"
                    return
            if job.completion_tokens < job.max_new_tokens:
                job.finish_reason = "stop"  # an end-of-sequence token
            if rest := matcher.flush():
                yield rest
        finally:
            decoding.close()

    def cancel_all(self) -> None:
        """Stop every generation before its next token (the server is shutting down)."""
        for cancel in list(self._cancels):
            cancel.set()
