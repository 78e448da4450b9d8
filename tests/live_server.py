"""A real ``olive-flows serve`` process on 127.0.0.1 for the tests, stopped with SIGTERM (named apart
from bench/serving.py, which tests/test_bench.py imports)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx

STARTUP_S = 60
STOP_S = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running server: its base URL, process and combined output file."""

    def __init__(self, process: subprocess.Popen, url: str, output: Path):
        self.process = process
        self.url = url
        self.output = output

    @property
    def api(self) -> str:
        return self.url + "/v1"

    def stop(self) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the process took to exit."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=STOP_S)
        return code, time.monotonic() - started

    def rss_kb(self) -> int:
        """Resident memory of the server process (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


@contextlib.contextmanager
def serving(package: Path, *args: str, env: dict[str, str] | None = None, output: Path) -> Iterator[Server]:
    """``olive-flows serve package *args`` on a free loopback port until the block ends."""
    port = free_port()
    command = [sys.executable, "-m", "olive_flows", "serve", str(package), "--port", str(port), *args]
    with open(output, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    server = Server(process, f"http://127.0.0.1:{port}", output)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"the server exited with {process.returncode}:\n{output.read_text(encoding='utf-8')}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.url + "/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{output.read_text(encoding='utf-8')}")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
