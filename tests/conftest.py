"""Fixtures: a real Oyez server on 127.0.0.1 (a free port), the official OpenAI client, raw HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env_overrides: dict[str, str], log_path, up: str = "/ready") -> tuple[subprocess.Popen, str]:
    """Start `python -m server serve` and return once `up` answers 200 (`/health` for a server that is not ready)."""
    port = _free_port()
    env = {**os.environ, "OYEZ_LOG_LEVEL": "info", **env_overrides}
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(f"{url}{up}", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server not ready in time; see {log_path}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@dataclass
class Server:
    url: str
    pid: int
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (user + system, all threads)."""
        return cpu_seconds(self.pid)

    def threads(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


@contextmanager
def running_server(env_overrides: dict[str, str], log_path, up: str = "/ready") -> Iterator[Server]:
    """A server started as `start_server` does, stopped when the block ends."""
    proc, url = start_server(env_overrides, log_path, up)
    try:
        yield Server(url=url, pid=proc.pid, log=log_path)
    finally:
        stop_server(proc)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server({"OYEZ_PRELOAD": '["whisper-1"]', "OYEZ_SSE_KEEPALIVE_SECONDS": "1"}, log) as srv:
        yield srv


@pytest.fixture(scope="session")
def server_url(server):
    return server.url


@pytest.fixture(scope="session")
def client(server_url):
    from openai import OpenAI

    return OpenAI(base_url=f"{server_url}/v1", api_key="sk-oyez-test", max_retries=0, timeout=300)


@pytest.fixture(scope="session")
def http(server_url):
    with httpx.Client(base_url=server_url, timeout=300) as c:
        yield c
