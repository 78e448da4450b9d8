"""Serving figures: olive-flows serve against the same package decoded in-process (one request at
a time, the two taking turns), under 1 to 8 concurrent clients, and against llama-cpp-python's
OpenAI-compatible server on the same weights.

Every server binds to 127.0.0.1, every load is a fixed number of requests with a time limit, and
every server is stopped (SIGTERM) when its measurement ends.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
from decode import Engine, round_robin

STARTUP_S = 120
REQUEST_S = 120  # no single request may take longer
CLIENTS = (1, 2, 4, 8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(command: list[str], port: int, health: str) -> Iterator[str]:
    """Start ``command`` (a server on 127.0.0.1:``port``), wait until ``health`` answers, stop it after.
    Its output goes to a file: a pipe left unread would stall the server once full."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + STARTUP_S
            while True:
                if process.poll() is not None:
                    output.seek(0)
                    raise RuntimeError(f"{command[2:4]} exited with {process.returncode}: {output.read()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + health, timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{command[2:4]} did not start in {STARTUP_S} s")
                time.sleep(0.5)
            yield url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def olive_flows_server(package: Path, workers: int, parallel: int) -> contextlib.AbstractContextManager[str]:
    port = _free_port()
    command = [sys.executable, "-m", "olive_flows", "serve", str(package), "--port", str(port)]
    return running(
        [*command, "--workers", str(workers), "--parallel", str(parallel), "--max-queue", "64"], port, "/health"
    )


def llamacpp_server(gguf: Path, threads: int) -> contextlib.AbstractContextManager[str]:
    """llama-cpp-python's own OpenAI-compatible server on the GGUF (its chat template from the GGUF)."""
    port = _free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "base"]
    command += ["--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", "2048"]
    command += ["--interrupt_requests", "False"]  # its default cuts a streamed answer short for the next request
    return running([*command, "--host", "127.0.0.1", "--port", str(port)], port, "/v1/models")


def stream_once(url: str, model: str, prompt: list[dict], tokens: int) -> dict[str, float]:
    """One streamed chat completion; its pieces, time to the first and time from first to last."""
    body = {"model": model, "messages": prompt, "max_tokens": tokens, "temperature": 0, "stream": True}
    started = time.perf_counter()
    first = last = None
    pieces = 0
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=REQUEST_S) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            choices = json.loads(line[5:]).get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):
                last = time.perf_counter()
                first = first or last
                pieces += 1
    if first is None:
        raise RuntimeError(f"{model}: no text streamed")
    return {"pieces": pieces, "first_s": first - started, "decode_s": last - first, "total_s": last - started}


def single_stream(
    url: str, model: str, prompt: list[dict], tokens: int, repeats: int, direct: Engine | None = None
) -> dict[str, Any]:
    """tokens/s of one streamed request at a time (after the first token), median of ``repeats``.
    With ``direct`` (the same package decoded in-process), the two take turns (decode.round_robin),
    so that their ratio is measured side by side; its figures are under "direct"."""

    def served() -> dict[str, float]:
        run = stream_once(url, model, prompt, tokens)
        return {"time_to_first_token_s": run["first_s"], "tokens_per_s": (run["pieces"] - 1) / run["decode_s"]}

    speeds = round_robin({"served": served, **({"direct": direct} if direct else {})}, repeats)
    rounded = {
        name: {
            "tokens_per_s": round(s["tokens_per_s"], 1),
            "time_to_first_token_s": round(s["time_to_first_token_s"], 4),
        }
        for name, s in speeds.items()
    }
    return {**rounded["served"], **({"direct": rounded["direct"]} if direct else {})}


def concurrent_load(url: str, models: list[str], prompt: list[dict], tokens: int, clients: int, rounds: int) -> dict:
    """``clients`` clients, each sending ``rounds`` streamed requests in turn (the models mixed):
    aggregate tokens/s over the wall time, and the median time to first token."""
    stream_once(url, models[0], prompt, tokens)

    def client(number: int) -> list[dict[str, float]]:
        return [stream_once(url, models[(number + i) % len(models)], prompt, tokens) for i in range(rounds)]

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        runs = [r for found in pool.map(client, range(clients)) for r in found]
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(runs),
        "aggregate_tokens_per_s": round(sum(r["pieces"] for r in runs) / wall, 1),
        "time_to_first_token_s": round(statistics.median(r["first_s"] for r in runs), 4),
    }


def configurations() -> dict[str, dict[str, int]]:
    """The server set-ups measured: the defaults (one process, four requests decoding in turns) and
    one process per core, each decoding one request at a time (onnxruntime-genai holds Python's GIL
    while it computes a token, so more requests in one process take turns rather than add cores)."""
    return {"default": {"workers": 1, "parallel": 4}, "per_core": {"workers": os.cpu_count() or 1, "parallel": 1}}


def serve_figures(
    package: Path,
    adapters: list[str],
    gguf: Path,
    prompt: list[dict],
    tokens: int,
    repeats: int,
    say: Any,
    direct: Engine,
) -> dict[str, Any]:
    """Everything RESULTS.md reports about serving (see the module docstring); ``direct``: the base
    decoded in-process, which takes turns with the default server's single requests."""
    name = json.loads((package / "manifest.json").read_text(encoding="utf-8"))["recipe"]["name"]
    models = [name, *(f"{name}:{a}" for a in adapters)]
    rounds = max(2, repeats // 2)
    figures: dict[str, Any] = {"tokens": tokens, "configurations": {}}
    for label, setup in configurations().items():
        say(f"serve ({label}: --workers {setup['workers']} --parallel {setup['parallel']}): 1 to {CLIENTS[-1]} clients")
        with olive_flows_server(package, setup["workers"], setup["parallel"]) as url:
            figures["configurations"][label] = {
                **setup,
                "single": single_stream(url, name, prompt, tokens, repeats, direct if label == "default" else None),
                "load": [concurrent_load(url, models, prompt, tokens, c, rounds) for c in CLIENTS],
                "base_4_clients": concurrent_load(url, [name], prompt, tokens, 4, rounds),
            }
    cores = os.cpu_count() or 1
    say(f"serve: llama-cpp-python's server, {cores} threads, 4 concurrent clients on the base model")
    try:
        with llamacpp_server(gguf, cores) as url:
            figures["llamacpp_server"] = {
                "threads": cores,
                "single": single_stream(url, "base", prompt, tokens, repeats),
                "base_4_clients": concurrent_load(url, ["base"], prompt, tokens, 4, rounds),
            }
    except RuntimeError as exc:
        figures["llamacpp_server"] = {"skipped": f"llama-cpp-python's server did not run: {exc}"}
    return figures
