"""The client half of scripts/test-docker: run inside a container's network namespace (nsenter -n), it calls the
server at 127.0.0.1 with the official openai SDK on real speech and checks what comes back.

    python scripts/docker_probe.py PORT transcribe            JFK through the SDK (json, then a stream)
    python scripts/docker_probe.py PORT diarize               the two-speaker call, diarized_json
    python scripts/docker_probe.py PORT inflight MARKER       send one request, touch MARKER once the server
                                                              reports it decoding, and check it completes (the
                                                              caller stops the container meanwhile)
Prints one line per check and exits non-zero on the first failure.
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.request
from pathlib import Path

from openai import OpenAI

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.helpers import DATA, references, wer  # noqa: E402

JFK = DATA / "jfk.wav"
CALL = DATA / "diarization" / "sample.wav"


def client(port: int) -> OpenAI:
    return OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=900)


def transcribe(port: int) -> None:
    reference = references()["jfk.wav"]
    with JFK.open("rb") as fh:
        result = client(port).audio.transcriptions.create(model="whisper-1", file=fh, response_format="verbose_json")
    error = wer(reference, result.text)
    assert error < 0.1 and 10.5 < result.duration < 11.5, (error, result.text, result.duration)
    assert all(0 <= s.start <= s.end <= result.duration + 1e-6 for s in result.segments)
    print(f"transcribe: WER {error:.1%}, {len(result.segments)} segments: {result.text.strip()!r}")
    with JFK.open("rb") as fh:
        events = list(client(port).audio.transcriptions.create(model="gpt-4o-mini-transcribe", file=fh, stream=True))
    done = events[-1]
    assert done.type == "transcript.text.done" and wer(reference, done.text) < 0.1, done
    print(f"stream: {len(events) - 1} delta events, then done")


def diarize(port: int) -> None:
    with CALL.open("rb") as fh:
        result = client(port).audio.transcriptions.create(
            model="gpt-4o-transcribe-diarize", file=fh, response_format="diarized_json")
    body = result.model_dump()
    speakers = [s["speaker"] for s in body["segments"]]
    assert set(speakers) == {"A", "B"} and speakers[0] == "A", speakers
    assert all(0 <= s["start"] <= s["end"] <= body["duration"] + 1e-6 for s in body["segments"])
    assert abs(body["duration"] - 30.0) < 0.05
    print(f"diarize: {len(body['segments'])} segments, speakers {sorted(set(speakers))}; "
          f"first: {body['segments'][0]['speaker']}: {body['segments'][0]['text']!r}")


def decoding(port: int) -> bool:
    """True while the server's /metrics shows a decode running (oyez_decodes_running > 0)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return any(line.startswith("oyez_decodes_running{") and float(line.split()[-1]) > 0 for line in text.splitlines())


def inflight(port: int, marker: Path) -> None:
    reference = references()["jfk.wav"]
    outcome: dict = {}

    def call() -> None:
        try:
            with JFK.open("rb") as fh:
                outcome["text"] = client(port).audio.transcriptions.create(model="whisper-1", file=fh).text
        except Exception as exc:  # reported below
            outcome["error"] = repr(exc)

    started = time.monotonic()
    thread = threading.Thread(target=call)
    thread.start()
    # Tell the caller to stop the container only once the server reports the decode running.
    while thread.is_alive() and not decoding(port):
        time.sleep(0.1)
    assert thread.is_alive(), f"the request ended before the container was stopped: {outcome}"
    marker.touch()
    thread.join()
    assert "text" in outcome and wer(reference, outcome["text"]) < 0.1, outcome
    print(f"in flight at SIGTERM: finished with 200 after {time.monotonic() - started:.1f} s: {outcome['text'].strip()!r}")


if __name__ == "__main__":
    port, check = int(sys.argv[1]), sys.argv[2]
    if check == "inflight":
        inflight(port, Path(sys.argv[3]))
    else:
        {"transcribe": transcribe, "diarize": diarize}[check](port)
