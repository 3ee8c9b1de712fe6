"""The real Cog HTTP server (cog 0.23's coglet, ``python -m cog.server.http``) as a subprocess on a
free loopback port, for the tests: start, wait until ready, request, stop."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

STARTUP_TIMEOUT = 120.0
REQUEST_TIMEOUT = 60.0
BUSY_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CogServer:
    def __init__(self, port: int, process: subprocess.Popen, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.process = process
        self.log = log
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(request, timeout=REQUEST_TIMEOUT) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read() or b"{}")

    def predict(self, inputs: dict) -> tuple[int, dict]:
        """POST /predictions; a 409 (the slot is still finishing the last prediction) is retried."""
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            status, body = self.request("POST", "/predictions", {"input": inputs})
            if status != 409 or time.monotonic() > deadline:
                return status, body
            time.sleep(0.1)

    def wait_ready(self) -> dict | None:
        """The health check once READY; None if the server exited because the port was taken."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        health: dict = {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "address already in use" in self.log_tail().lower():
                    return None
                pytest.fail(f"the Cog server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                _, health = self.request("GET", "/health-check")
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                health = {}
            if health.get("status") == "READY":
                return health
            if health.get("status") == "SETUP_FAILED":
                pytest.fail(f"setup failed: {health.get('setup')}\n{self.log_tail()}")
            time.sleep(0.25)
        pytest.fail(f"the Cog server was not ready after {STARTUP_TIMEOUT:.0f} s (last: {health}):\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the server's process group (server + worker), then SIGKILL if needed."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the worker, if it outlived the server
        except (ProcessLookupError, PermissionError):
            pass
        if self.process.poll() is None:
            self.process.wait(timeout=15)


@contextlib.contextmanager
def running_cog_server(env: dict[str, str], cwd: Path, logs: Path) -> Iterator[CogServer]:
    """A ready server started in ``cwd`` (where predict.py and .cog/ are) with ``env``; its log in
    ``logs``; stopped, worker included, on exit."""
    cog_server = None
    try:
        for attempt in range(3):  # the free port may be taken before the server binds it
            env = {**env, "PORT": str(free_port())}
            log = logs / f"server-{attempt}.log"
            with open(log, "wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"],
                    cwd=cwd,  # predict.py and .cog/openapi_schema.json are found relative to it
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, so the worker is stopped with it
                )
            cog_server = CogServer(int(env["PORT"]), process, log)
            cog_server.health = cog_server.wait_ready()
            if cog_server.health is not None:
                break
            cog_server.stop()
        else:
            pytest.fail(f"no free port for the Cog server:\n{cog_server.log_tail()}")
        yield cog_server
    finally:
        if cog_server is not None:
            cog_server.stop()
