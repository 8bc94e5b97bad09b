"""Graceful shutdown: on SIGTERM the server stops accepting, finishes in-flight requests, then exits.

The server is started with the `oyez` console script, the Docker image's entry point.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from engines.audio import decode_audio
from tests.conftest import _free_port
from tests.helpers import DATA, ROOT, references, wav_bytes, wer
from tests.test_operations import scrape, value

JFK = DATA / "jfk.wav"


def start(tmp_path: Path, **env) -> tuple[subprocess.Popen, str, Path]:
    port = _free_port()
    log = tmp_path / "server.log"
    oyez = Path(sys.executable).with_name("oyez")
    proc = subprocess.Popen(
        [str(oyez), "serve", "--host", "127.0.0.1", "--port", str(port)],
        # PYTHONPATH: the script imports this checkout's server, not whatever tree the package was installed from.
        cwd=ROOT, env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
                       "OYEZ_PRELOAD": '["whisper-1"]', "OYEZ_DEFAULT_WEIGHTS": "tiny.en", **env},
        stdout=open(log, "w"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return proc, url, log
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("server not ready: " + log.read_text())


def repeats_for(url: str, decode_s: float) -> int:
    """How many copies of jfk (11 s) this server needs about `decode_s` s to decode, from the rate it decodes
    one copy at now (its own `openai-processing-ms`), so the waits below follow the machine's real speed."""
    with open(JFK, "rb") as fh:
        r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": fh}, data={"model": "whisper-1"}, timeout=300)
    assert r.status_code == 200, r.text
    per_copy = max(int(r.headers["openai-processing-ms"]) / 1000, 1e-3)
    return max(2, min(120, math.ceil(decode_s / per_copy)))


def long_request(url: str, repeats: int, out: dict) -> None:
    samples = np.concatenate([decode_audio(str(JFK)).samples] * repeats)
    try:
        r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("long.wav", wav_bytes(samples), "audio/wav")},
                       data={"model": "whisper-1"}, timeout=900)
        out["status"], out["body"] = r.status_code, r.text
        out["text"] = r.json()["text"] if r.status_code == 200 else None
    except httpx.HTTPError as exc:
        out["error"] = exc
    out["at"] = time.monotonic()


def long_stream(url: str, repeats: int, out: dict) -> None:
    """A streamed request (another model name, so it decodes beside the plain one): collect its events."""
    samples = np.concatenate([decode_audio(str(JFK)).samples] * repeats)
    events = []
    try:
        with httpx.stream("POST", f"{url}/v1/audio/transcriptions", timeout=900,
                          files={"file": ("long.wav", wav_bytes(samples), "audio/wav")},
                          data={"model": "gpt-4o-mini-transcribe", "stream": "true"}) as r:
            out["status"] = r.status_code
            events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
    except httpx.HTTPError as exc:
        out["error"] = exc
    out["events"] = events
    out["at"] = time.monotonic()


def wait_until_decoding(url: str, thread: threading.Thread, model: str = "whisper-1") -> None:
    deadline = time.monotonic() + 120
    with httpx.Client(base_url=url, timeout=10) as http:
        while time.monotonic() < deadline and thread.is_alive():
            if value(scrape(http), "oyez_decodes_running", model=model) >= 1:
                return
            time.sleep(0.05)
    raise AssertionError(f"the {model} request never started decoding")


def refuses_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return False
    except OSError:
        return True


def test_sigterm_finishes_the_request_in_flight_then_exits(tmp_path):
    proc, url, log = start(tmp_path, OYEZ_SHUTDOWN_TIMEOUT_SECONDS="500")
    try:
        out: dict = {}
        streamed: dict = {}
        repeats = repeats_for(url, 8)  # both requests decode for seconds after SIGTERM
        thread = threading.Thread(target=long_request, args=(url, repeats, out))
        stream_thread = threading.Thread(target=long_stream, args=(url, repeats, streamed))
        thread.start()
        stream_thread.start()
        wait_until_decoding(url, thread)
        wait_until_decoding(url, stream_thread, "gpt-4o-mini-transcribe")
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not refuses_connections(url) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert refuses_connections(url), "still accepting connections after SIGTERM"
        assert proc.poll() is None or out, "exited before answering the request in flight"
        thread.join(timeout=540)  # generous: the machine may be shared
        assert out.get("status") == 200, out
        assert out["at"] > signalled  # answered after SIGTERM: it was in flight when the signal came
        assert wer(" ".join([references()["jfk.wav"]] * repeats), out["text"]) <= 0.15, out["text"]
        stream_thread.join(timeout=540)
        assert streamed.get("status") == 200 and streamed["events"], streamed  # the stream was not cut at SIGTERM
        assert streamed["at"] > signalled
        done = streamed["events"][-1]
        assert done["type"] == "transcript.text.done", streamed["events"][-3:]
        assert wer(" ".join([references()["jfk.wav"]] * repeats), done["text"]) <= 0.15, done["text"]
        # uvicorn re-raises the signal once it has shut down, so the exit status says "terminated by SIGTERM".
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "Shutting down" in text and "Finished server process" in text
    assert "Traceback" not in text


def test_sigterm_gives_up_after_the_shutdown_timeout(tmp_path):
    proc, url, _ = start(tmp_path, OYEZ_SHUTDOWN_TIMEOUT_SECONDS="1")
    try:
        out: dict = {}
        # At least 20 s of decoding at the speed measured now: far over the 1 s the shutdown may wait.
        thread = threading.Thread(target=long_request, args=(url, repeats_for(url, 20), out))
        thread.start()
        wait_until_decoding(url, thread)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
        thread.join(timeout=60)
        # Cut off: an error or a closed connection, never a fake answer. A server that waited for the decode
        # (20 s of it, against a 1 s shutdown timeout) would have answered it with a 200 before exiting.
        assert out.get("status") != 200, out
    finally:
        if proc.poll() is None:
            proc.kill()
