"""The HTTP application: OpenAI's chat and text completion endpoints, models, health, feedback and
a chat page, on Starlette through FastAPI, with server-sent events from sse-starlette.

Every request is checked before anything is generated (its body, model, context length and the
server's capacity), so a 4xx arrives as a plain JSON error even for a streamed request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException

from olive_flows.layout import MANIFEST
from olive_flows.serve import requestlog
from olive_flows.serve.catalog import Catalog
from olive_flows.serve.engine import Engine, Job
from olive_flows.serve.errors import ApiError
from olive_flows.serve.protocol import ChatRequest, Common, CompletionRequest, FeedbackRequest, parse
from olive_flows.serve.requestlog import RequestLog

CONFIG_ENV = "OLIVE_FLOWS_SERVE"  # the settings a worker process starts from (serve --workers)
POLL_S = 0.25  # how often a request that is not streamed checks whether its client is still there
log = logging.getLogger("olive_flows.serve")


@dataclass(frozen=True)
class Settings:
    """What ``olive-flows serve`` starts each server process with."""

    package: str
    threads: int | None = None
    parallel: int = 4
    max_queue: int = 16
    api_key: str | None = None
    log: str | None = None

    def to_env(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_env(cls) -> Settings:
        return cls(**json.loads(os.environ[CONFIG_ENV]))


def from_environment() -> FastAPI:
    """The application of one server process, from the settings in ``OLIVE_FLOWS_SERVE`` (uvicorn's
    factory, so that each of several worker processes loads the package itself)."""
    return create_app(Settings.from_env())


def create_app(settings: Settings) -> FastAPI:
    package = Path(settings.package)
    engine = Engine(package, settings.threads, settings.parallel, settings.max_queue)
    name = json.loads((package / MANIFEST).read_text(encoding="utf-8"))["recipe"]["name"]
    catalog = Catalog(name, tuple(engine.runtime.adapter_names))
    request_log = RequestLog(Path(settings.log)) if settings.log else None
    started = int(time.time())

    async def shutdown() -> None:
        engine.cancel_all()
        if request_log:
            request_log.close()

    def authenticate(request: Request) -> None:
        """With an API key set, every /v1 request must carry it as a bearer token."""
        if not settings.api_key:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {settings.api_key}".encode()):
            problem = "Missing API key" if not given else "Incorrect API key"
            raise ApiError(401, f"{problem}: send it as 'Authorization: Bearer KEY'", code="invalid_api_key")

    app = FastAPI(title="olive-flows serve", docs_url=None, redoc_url=None, on_shutdown=[shutdown])
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authenticate)])

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return await api_error(request, ApiError(exc.status_code, message))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return await api_error(request, ApiError(500, f"The server failed to answer: {type(exc).__name__}"))

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return resources.files("olive_flows.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": catalog.ids, "running": engine.running, "waiting": engine.waiting}

    def model_card(model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": started, "owned_by": "olive-flows"}

    @v1.get("/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(i) for i in catalog.ids]}

    @v1.get("/models/{model_id}")
    async def model(model_id: str) -> dict[str, Any]:
        return model_card(catalog.id_of(catalog.adapter_of(model_id)))

    def job_for(body: Common, tokens: list[int]) -> Job:
        adapter = catalog.adapter_of(body.model)
        budget = engine.budget(len(tokens), body.new_tokens)
        engine.check_capacity()
        return Job(tokens, adapter, budget, body.sampling(), body.stops)

    def usage(job: Job) -> dict[str, int]:
        prompt = len(job.tokens)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": job.completion_tokens,
            "total_tokens": prompt + job.completion_tokens,
        }

    def record(kind: str, ident: str, body: Common, job: Job, conversation: dict[str, Any]) -> None:
        if request_log is None or job.finish_reason == "cancelled":
            return
        sampling = body.sampling().__dict__ | {"max_tokens": job.max_new_tokens, "stop": job.stops}
        timings = {"queued_s": job.queued_s, "first_token_s": job.first_token_s, "total_s": job.total_s}
        model_id = catalog.id_of(job.adapter)
        request_log.append(
            requestlog.exchange(
                ident, kind, model_id, job.adapter, conversation, usage(job), job.finish_reason, sampling, timings
            )
        )

    async def collect(request: Request, job: Job) -> str:
        """The whole answer; stopped if the client goes away first."""
        pieces: list[str] = []

        async def run() -> None:
            async with contextlib.aclosing(engine.generate(job)) as generated:
                async for piece in generated:
                    pieces.append(piece)

        task = asyncio.ensure_future(run())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=POLL_S)
                if not task.done() and await request.is_disconnected():
                    task.cancel()
            await task
        finally:
            task.cancel()
        return "".join(pieces)

    def stream(job: Job, chunk: Any, done: Any, opening: dict[str, Any] | None = None) -> EventSourceResponse:
        """Server-sent events: ``opening`` first when given, ``chunk(text)`` per piece, the events of
        ``done(answer)`` last, then ``[DONE]``. A client that disconnects cancels the generation."""

        async def events() -> AsyncIterator[dict[str, str]]:
            pieces: list[str] = []
            if opening is not None:
                yield {"data": json.dumps(opening)}
            try:
                async with contextlib.aclosing(engine.generate(job)) as generated:  # closed when the client leaves
                    async for piece in generated:
                        pieces.append(piece)
                        yield {"data": json.dumps(chunk(piece))}
            except ApiError as exc:
                yield {"data": json.dumps(exc.body())}
                return
            except Exception as exc:
                log.exception("streamed generation failed")
                yield {"data": json.dumps(ApiError(500, f"Generation failed: {type(exc).__name__}").body())}
                return
            for event in done("".join(pieces)):
                yield {"data": json.dumps(event)}
            yield {"data": "[DONE]"}

        return EventSourceResponse(events(), ping=15)

    @v1.post("/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> dict[str, Any] | EventSourceResponse:
        body = parse(await request.body(), ChatRequest)
        turns = body.turns()
        job = job_for(body, engine.prompt_tokens(messages=turns))
        ident, created, model_id = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), catalog.id_of(job.adapter)
        base = {"id": ident, "created": created, "model": model_id, "system_fingerprint": None}

        def exchange(answer: str) -> dict[str, Any]:
            return {"messages": [*turns, {"role": "assistant", "content": answer}]}

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            def chunk(text: str, delta: dict[str, str] | None = None, finish: str | None = None) -> dict[str, Any]:
                choice = {
                    "index": 0,
                    "delta": delta if delta is not None else {"content": text},
                    "finish_reason": finish,
                }
                return {**base, "object": "chat.completion.chunk", "choices": [choice], "logprobs": None}

            def done(answer: str) -> list[dict[str, Any]]:
                record("chat.completion", ident, body, job, exchange(answer))
                events = [chunk("", {}, job.finish_reason)]
                if include_usage:
                    events.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage(job)})
                return events

            return stream(job, chunk, done, opening=chunk("", {"role": "assistant", "content": ""}))
        answer = await collect(request, job)
        record("chat.completion", ident, body, job, exchange(answer))
        message = {"role": "assistant", "content": answer}
        choice = {"index": 0, "message": message, "finish_reason": job.finish_reason, "logprobs": None}
        return {**base, "object": "chat.completion", "choices": [choice], "usage": usage(job)}

    @v1.post("/completions", response_model=None)
    async def completions(request: Request) -> dict[str, Any] | EventSourceResponse:
        body = parse(await request.body(), CompletionRequest)
        job = job_for(body, engine.prompt_tokens(text=body.text))
        ident, created, model_id = f"cmpl-{uuid.uuid4().hex}", int(time.time()), catalog.id_of(job.adapter)
        base = {"id": ident, "object": "text_completion", "created": created, "model": model_id}

        def choice(text: str, finish: str | None) -> dict[str, Any]:
            return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            def done(answer: str) -> list[dict[str, Any]]:
                record("text_completion", ident, body, job, {"prompt": body.text, "completion": answer})
                events = [{**base, "choices": [choice("", job.finish_reason)]}]
                if include_usage:
                    events.append({**base, "choices": [], "usage": usage(job)})
                return events

            return stream(job, lambda text: {**base, "choices": [choice(text, None)]}, done)
        answer = await collect(request, job)
        record("text_completion", ident, body, job, {"prompt": body.text, "completion": answer})
        return {**base, "choices": [choice(answer, job.finish_reason)], "usage": usage(job)}

    @v1.post("/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        body = parse(await request.body(), FeedbackRequest)
        if request_log is None:
            raise ApiError(400, "This server keeps no request log to rate; start it with --log FILE", code="no_log")
        request_log.append(requestlog.feedback(body.id, body.rating, body.comment))
        return {"id": body.id, "object": "feedback", "rating": body.rating}

    app.include_router(v1)
    return app
