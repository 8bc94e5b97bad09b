"""Promises of the README that need a server set up for them, checked end to end on real speech.

One server (`promised`) holds most of them, started as an operator would configure it:

- `tiny.en` behind every public name, `OYEZ_VAD_BY_DEFAULT=false`, `OYEZ_BATCH_SIZE=4`, two requests at once;
- `OYEZ_PRELOAD` = a `base` model whose weights are still being joined (the test holds the join's lock, so
  "loading" lasts exactly as long as the test wants) and the diarize model, whose extra is missing: a
  `sitecustomize` on PYTHONPATH makes `import pyannote` fail in the server process, as on an install
  without `oyez[diarize]`; nothing else is changed;
- `deaf`, a weights directory whose `preprocessor_config.json` asks for 128 mel bins where the model takes
  80: it loads, and every decode fails inside CTranslate2 once the stream has begun;
- log level debug, so "never logged" holds at every level.

A second, small server (`strict`) has a 1 s `OYEZ_REQUEST_TIMEOUT_SECONDS`. Audio lengths that must outlast
something are derived from the decode rate measured on the running server, not fixed.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import Server, running_server
from tests.helpers import DATA, assert_timeline, normalize, read_wav, references, wav_bytes, wer
from tests.test_api_errors import assert_envelope
from tests.test_operations import scrape, value

REFS = references()
JFK = DATA / "jfk.wav"

NO_PYANNOTE = '''\
"""Test shim: this interpreter behaves as if the `diarize` extra (pyannote) were not installed."""
import sys


class _NoPyannote:
    def find_spec(self, name, path=None, target=None):
        if name == "pyannote" or name.startswith("pyannote."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoPyannote())
'''


def deaf_weights(target: Path) -> Path:
    """The bundled tiny.en files, with a preprocessor config that does not match the model (128 mels, not 80)."""
    from engines.bundled import bundled_path

    target.mkdir()
    source = bundled_path("tiny.en", target)
    for f in source.iterdir():
        (target / f.name).symlink_to(f)
    (target / "preprocessor_config.json").write_text(json.dumps({"feature_size": 128}))
    return target


@pytest.fixture(scope="module")
def promised(tmp_path_factory):
    root = tmp_path_factory.mktemp("promised")
    shim = root / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(NO_PYANNOTE)
    python_path = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH", "")) if p)
    # The shim does what it claims in a fresh interpreter of this environment, and nothing more.
    probe = subprocess.run([sys.executable, "-c", "import pyannote.audio"], env={**os.environ, "PYTHONPATH": python_path},
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'pyannote'" in probe.stderr, probe.stderr
    cache = root / "cache"
    (cache / "whisper-base").mkdir(parents=True)
    lock = open(cache / "whisper-base" / ".join.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # the server's first join of `base` waits for this
    log = root / "server.log"
    with running_server({
        "PYTHONPATH": python_path,
        "OYEZ_CACHE_DIR": str(cache),
        "OYEZ_DEFAULT_WEIGHTS": "tiny.en",
        "OYEZ_MODELS": json.dumps({"held": "base", "deaf": str(deaf_weights(root / "deaf"))}),
        "OYEZ_PRELOAD": '["held", "gpt-4o-transcribe-diarize"]',
        "OYEZ_VAD_BY_DEFAULT": "false",
        "OYEZ_BATCH_SIZE": "4",
        "OYEZ_NUM_WORKERS": "2",
        "OYEZ_MAX_CONCURRENCY": "2",
        "OYEZ_LOG_LEVEL": "debug",
    }, log, up="/health") as srv, httpx.Client(base_url=srv.url, timeout=600) as http:
        srv.lock = lock
        srv.http = http
        yield srv
        lock.close()


def sdk(server: Server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=600)


def post(server: Server, data: dict, file=JFK, url="/v1/audio/transcriptions", headers=None):
    content = file.read_bytes() if isinstance(file, Path) else file
    return server.http.post(url, files={"file": ("a.wav", content, "audio/wav")}, data=data, headers=headers)


def speech(seconds: float) -> bytes:
    """Real speech (jfk, librivox_0870, each followed by 0.5 s of silence) repeated to at least `seconds`."""
    clips = [read_wav(JFK), read_wav(DATA / "librivox_0870.wav")]
    gap = np.zeros(8000, np.float32)
    parts, total = [], 0.0
    while total < seconds:
        clip = clips[len(parts) // 2 % 2]
        parts += [clip, gap]
        total += (len(clip) + len(gap)) / 16000
    return wav_bytes(np.concatenate(parts))


def seconds_to_decode_for(server: Server, decode_s: float, cap: float = 900.0) -> float:
    """Audio length that this server needs about `decode_s` s to decode, from how fast it decodes jfk now."""
    r = post(server, {"model": "whisper-1"})
    assert r.status_code == 200, r.text
    per_audio_second = int(r.headers["openai-processing-ms"]) / 1000 / 11.0
    return min(cap, max(60.0, decode_s / max(per_audio_second, 1e-4)))


def idle_cpu(server: Server, seconds: float = 5.0) -> float:
    before = server.cpu_seconds()
    time.sleep(seconds)
    return server.cpu_seconds() - before


def wait_for_line(server: Server, pattern: str, timeout: float = 120) -> re.Match:
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, server.log_text(), re.MULTILINE)
        if found or time.monotonic() > deadline:
            assert found, f"no log line matching {pattern!r}"
            return found
        time.sleep(0.2)


def wait_decoding(server: Server, model: str, at_least: int = 1, at_most: int | None = None,
                  timeout: float = 120) -> None:
    """Wait until `model` has at least `at_least` decodes running (or, with `at_most`, at most that many)."""
    deadline = time.monotonic() + timeout
    while True:
        running = value(scrape(server.http), "oyez_decodes_running", model=model)
        if (running <= at_most) if at_most is not None else (running >= at_least):
            return
        assert time.monotonic() < deadline, f"{model}: {running} decodes running"
        time.sleep(0.05)


# ---- readiness ------------------------------------------------------------------------------------------


def test_ready_is_503_while_loading_and_after_a_failed_preload(promised):
    http = promised.http
    assert http.get("/health").json() == {"status": "ok"}  # alive from the start
    for _ in range(5):  # `held` cannot finish loading while the test holds the lock
        r = http.get("/ready")
        assert r.status_code == 503 and r.json() == {"status": "loading"}, r.text
        time.sleep(0.2)
    # Requests to a model that is loaded on demand are served meanwhile.
    r = post(promised, {"model": "whisper-1"})
    assert r.status_code == 200 and wer(REFS["jfk.wav"], r.json()["text"]) <= 0.15, r.text
    promised.lock.close()  # the join goes ahead; the diarize model then fails to load
    deadline = time.monotonic() + 300
    while (r := http.get("/ready")).json() == {"status": "loading"} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert r.status_code == 503, r.text
    assert r.json() == {"status": "unavailable", "failed": ["gpt-4o-transcribe-diarize"]}
    assert "could not preload model gpt-4o-transcribe-diarize" in promised.log_text()
    loaded = {m["id"]: m["loaded"] for m in http.get("/v1/models").json()["data"]}
    assert loaded["held"] and not loaded["gpt-4o-transcribe-diarize"]  # the rest of the preload list did load


# ---- models refusing what they cannot do ------------------------------------------------------------------


def test_the_diarize_model_without_its_extra_is_400_model_not_available(promised):
    err = assert_envelope(post(promised, {"model": "gpt-4o-transcribe-diarize"}), 400, "model", "model_not_available")
    assert "diarize" in err["message"] and "pip install" in err["message"], err
    with pytest.raises(openai.BadRequestError) as info:
        sdk(promised).audio.transcriptions.create(file=open(JFK, "rb"), model="gpt-4o-transcribe-diarize",
                                                  response_format="diarized_json")
    assert info.value.body["code"] == "model_not_available"
    r = post(promised, {"model": "whisper-1"})  # and the server goes on serving
    assert r.status_code == 200 and wer(REFS["jfk.wav"], r.json()["text"]) <= 0.15


def test_the_diarize_model_refuses_translations(promised):
    err = assert_envelope(post(promised, {"model": "gpt-4o-transcribe-diarize"}, url="/v1/audio/translations"),
                          400, "model", "invalid_value")
    assert "translations" in err["message"]
    with pytest.raises(openai.BadRequestError):
        sdk(promised).audio.translations.create(file=open(DATA / "test_es.wav", "rb"), model="gpt-4o-transcribe-diarize")


def test_tiny_en_refuses_translation_and_other_languages(promised):
    client = sdk(promised)
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.translations.create(file=open(DATA / "test_es.wav", "rb"), model="whisper-1")
    assert info.value.body["param"] == "model" and info.value.body["code"] == "unsupported_value"
    assert "English-only" in info.value.body["message"]
    for language in ("es", "fr"):
        err = assert_envelope(post(promised, {"model": "whisper-1", "language": language}, file=DATA / "test_es.wav"),
                              400, "language", "unsupported_value")
        assert "English-only" in err["message"]
    # Asked for as a stream, the refusal is still a JSON 400 before any event.
    with pytest.raises(openai.BadRequestError):
        list(client.audio.transcriptions.create(file=open(JFK, "rb"), model="whisper-1", language="fr", stream=True))
    text = client.audio.transcriptions.create(file=open(JFK, "rb"), model="whisper-1", language="en").text
    assert wer(REFS["jfk.wav"], text) <= 0.15  # English itself is fine


# ---- settings through the server ----------------------------------------------------------------------------


def late_jfk() -> tuple[bytes, float]:
    audio = np.concatenate([np.zeros(20 * 16000, np.float32), read_wav(JFK)])
    return wav_bytes(audio), len(audio) / 16000


def test_vad_by_default_false_feeds_the_whole_file_to_the_model(promised):
    """20 s of silence, then jfk: with VAD off by default every second reaches the encoder (50 audio tokens a
    second); asking for VAD (`chunking_strategy=auto`) removes the silence."""
    audio, duration = late_jfk()
    client = sdk(promised)
    plain = client.audio.transcriptions.create(file=("late.wav", audio, "audio/wav"), model="gpt-4o-transcribe")
    vad = client.audio.transcriptions.create(file=("late.wav", audio, "audio/wav"), model="gpt-4o-transcribe",
                                             chunking_strategy="auto")
    assert plain.usage.input_token_details.audio_tokens == math.ceil(duration * 50)
    assert vad.usage.input_token_details.audio_tokens < 15 * 50  # about jfk's 11 s of speech
    assert wer(REFS["jfk.wav"], vad.text) <= 0.15
    assert "ask not what your country can do for you" in normalize(plain.text)


def test_batch_size_decodes_speech_chunks_in_batches(promised):
    """OYEZ_BATCH_SIZE=4: the request's speech is decoded as VAD chunks placed on the file's timeline (a
    segment's `seek` is its chunk's start, 20 s in), where sequential decoding numbers the silence-free audio
    from 0; the transcript is right either way."""
    audio, duration = late_jfk()
    result = sdk(promised).audio.transcriptions.create(
        file=("late.wav", audio, "audio/wav"), model="whisper-1", response_format="verbose_json",
        timestamp_granularities=["word", "segment"], chunking_strategy="auto")
    assert wer(REFS["jfk.wav"], result.text) <= 0.15
    assert_timeline(result.segments, duration)
    assert_timeline(result.words, duration)
    assert result.segments[0].start >= 19.0 and result.words[0].start >= 19.0
    assert all(s.seek >= 1900 for s in result.segments), [s.seek for s in result.segments]


# ---- failures, time limits, hang-ups ------------------------------------------------------------------------


def test_a_failure_mid_stream_is_an_error_event_the_sdk_raises(promised):
    """`deaf` loads, so the request is accepted and the stream starts (200, event-stream); the decoder then
    fails inside CTranslate2 (wrong number of mel bins): the stream ends with `{"type": "error", ...}` in
    OpenAI's envelope, the SDK raises it, the slot is given back and the server goes on serving."""
    with promised.http.stream("POST", "/v1/audio/transcriptions", files={"file": ("a.wav", JFK.read_bytes())},
                              data={"model": "deaf", "stream": "true", "language": "en"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events and events[-1] == {"type": "error", "error": {
        "message": "The server had an error while processing your request.", "type": "server_error",
        "param": None, "code": None}}, events
    assert all(e["type"] == "transcript.text.delta" for e in events[:-1])
    with pytest.raises(openai.APIError) as info:
        list(sdk(promised).audio.transcriptions.create(file=open(JFK, "rb"), model="deaf", stream=True))
    assert "error while processing" in info.value.message
    assert "stream failed after" in promised.log_text() and "Invalid input features shape" in promised.log_text()
    wait_decoding(promised, "deaf", at_most=0)  # the slot is given back once the stream has ended
    r = post(promised, {"model": "whisper-1"})
    assert r.status_code == 200 and wer(REFS["jfk.wav"], r.json()["text"]) <= 0.15


def log_runs(server: Server, model: str) -> list[tuple[float, float]]:
    """(start, end) of each finished `model` decode, from the server's own log: the line's time is the end."""
    runs = []
    pattern = rf"^(\S+ \S+) INFO oyez\.server: transcribe model={re.escape(model)} .* ran=([\d.]+)s$"
    for stamp, ran in re.findall(pattern, server.log_text(), re.MULTILINE):
        end = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        runs.append((end - float(ran), end))
    return runs


def test_parallel_requests_really_decode_at_the_same_time(promised):
    """Two requests on one model with two slots: the second starts while the first decodes, and the run
    intervals the server logs for them overlap (with one slot, the second would start after the first ended)."""
    audio = speech(seconds_to_decode_for(promised, 15, cap=300))
    client = sdk(promised)
    out = {}

    def long_one():
        out["long"] = client.audio.transcriptions.create(file=("long.wav", audio, "audio/wav"), model="gpt-4o-transcribe")

    worker = threading.Thread(target=long_one)
    worker.start()
    wait_decoding(promised, "gpt-4o-transcribe")
    short = client.audio.transcriptions.create(file=open(JFK, "rb"), model="gpt-4o-mini-transcribe").text
    worker.join(900)
    assert wer(REFS["jfk.wav"], short) <= 0.15
    assert "ask not what your country can do for you" in normalize(out["long"].text)
    (long_start, long_end), = log_runs(promised, "gpt-4o-transcribe")[-1:]
    (short_start, short_end), = log_runs(promised, "gpt-4o-mini-transcribe")[-1:]
    assert short_start < long_end and long_start < short_end, (long_start, long_end, short_start, short_end)


def raw_request(url: str, data: dict, audio: bytes, request_id: str) -> socket.socket:
    """Send a complete multipart request on a raw socket and return the socket, unread."""
    request = httpx.Request("POST", f"{url}/v1/audio/transcriptions", data=data,
                            files={"file": ("long.wav", audio, "audio/wav")}, headers={"X-Request-Id": request_id})
    body = request.read()
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    head = f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nX-Request-Id: {request_id}\r\n" \
           f"Content-Type: {request.headers['content-type']}\r\nContent-Length: {len(body)}\r\n\r\n"
    s.sendall(head.encode() + body)
    return s


def test_client_hang_up_stops_a_non_streamed_decode_with_499(promised):
    audio = speech(seconds_to_decode_for(promised, 30, cap=600))  # about 30 s of decoding if nobody stopped it
    s = raw_request(promised.url, {"model": "whisper-1"}, audio, "hangup-499")
    wait_decoding(promised, "whisper-1")
    s.close()  # hang up mid-decode
    line = wait_for_line(promised, r"^.*request_id=hangup-499 .*$").group(0)
    assert "status=499" in line, line
    assert value(scrape(promised.http), "oyez_decodes_running", model="whisper-1") == 0  # its slot is free
    assert idle_cpu(promised) < 0.15  # no decode left running in any thread


def test_no_prompt_or_transcript_is_ever_logged(promised):
    prompt = "Quokkas of Zanzibar say hello"
    client = sdk(promised)
    texts = [client.audio.transcriptions.create(file=open(JFK, "rb"), model="gpt-4o-transcribe", prompt=prompt).text,
             client.audio.transcriptions.create(file=open(DATA / "librivox_0870.wav", "rb"), model="whisper-1",
                                                response_format="verbose_json", timestamp_granularities=["word"]).text]
    events = list(client.audio.transcriptions.create(file=open(JFK, "rb"), model="gpt-4o-mini-transcribe", stream=True,
                                                     prompt=prompt))
    texts.append(events[-1].text)
    assert wer(REFS["jfk.wav"], texts[0]) <= 0.15 and wer(REFS["librivox_0870.wav"], texts[1]) <= 0.2
    wait_for_line(promised, r"model=gpt-4o-mini-transcribe .*stream=True")  # the stream's log line is written
    log = promised.log_text().lower()
    assert "quokka" not in log and "zanzibar" not in log
    for phrase in ("fellow americans", "your country", "dashwood", "prudently"):
        assert phrase not in log, phrase


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    log = tmp_path_factory.mktemp("strict") / "server.log"
    with running_server({"OYEZ_DEFAULT_WEIGHTS": "tiny.en", "OYEZ_PRELOAD": '["whisper-1"]',
                         "OYEZ_REQUEST_TIMEOUT_SECONDS": "1"}, log) as srv, \
            httpx.Client(base_url=srv.url, timeout=600) as http:
        srv.http = http
        yield srv


def test_a_decode_past_the_request_timeout_is_504_and_stops(promised, strict):
    # Audio the same weights need about 20 s for (measured on the other server), against a 1 s limit.
    audio = speech(seconds_to_decode_for(promised, 20, cap=600))
    r = strict.http.post("/v1/audio/transcriptions", files={"file": ("long.wav", audio, "audio/wav")},
                         data={"model": "whisper-1"})
    err = assert_envelope(r, 504, code="timeout")
    assert "1 seconds" in err["message"]
    assert value(scrape(strict.http), "oyez_decodes_running", model="whisper-1") == 0
    assert idle_cpu(strict) < 0.15  # stopped at the deadline, not decoding on unseen
    with pytest.raises(openai.APIStatusError) as info:  # the SDK sees it as a server error, status 504
        sdk(strict).audio.transcriptions.create(file=("long.wav", audio, "audio/wav"), model="whisper-1")
    assert info.value.status_code == 504
