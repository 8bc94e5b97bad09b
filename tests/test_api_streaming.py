"""Streaming (stream=true): OpenAI's transcript.text.* server-sent events, end to end."""

from __future__ import annotations

import json
import time

import numpy as np
import openai
import pytest

from tests.helpers import DATA, normalize, read_wav, references, wav_bytes, wer

REFS = references()
JFK = DATA / "jfk.wav"


def long_clip(seconds: float) -> bytes:
    """Real speech clips, each followed by half a second of silence, repeated to `seconds`."""
    clips = [read_wav(DATA / "jfk.wav"), read_wav(DATA / "librivox_0870.wav")]
    gap = np.zeros(8000, np.float32)
    parts, total, i = [], 0.0, 0
    while total < seconds:
        clip = clips[i % len(clips)]
        parts += [clip, gap]
        total += (len(clip) + len(gap)) / 16000
        i += 1
    return wav_bytes(np.concatenate(parts))


def sse_events(response) -> list[dict]:
    """Parse `data:` lines ourselves, as a client without the SDK would."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            events.append(json.loads(line[len("data: "):]))
    return events


def test_sdk_stream_matches_non_streamed(client):
    events = list(client.audio.transcriptions.create(file=open(JFK, "rb"), model="gpt-4o-mini-transcribe", stream=True))
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert deltas and events[-1].type == "transcript.text.done" and len(events) == len(deltas) + 1
    done = events[-1]
    assert done.text == "".join(d.delta for d in deltas)
    plain = client.audio.transcriptions.create(file=open(JFK, "rb"), model="gpt-4o-mini-transcribe")
    assert done.text == plain.text and wer(REFS["jfk.wav"], done.text) <= 0.10
    assert done.usage.output_tokens == plain.usage.output_tokens and done.usage.total_tokens == plain.usage.total_tokens


def test_whisper_1_streams_too(client):
    events = list(client.audio.transcriptions.create(file=open(DATA / "librivox_0870.wav", "rb"), model="whisper-1", stream=True))
    assert events[-1].type == "transcript.text.done"
    assert wer(REFS["librivox_0870.wav"], events[-1].text) <= 0.15


def test_stream_logprobs_per_delta_and_in_done(client):
    events = list(client.audio.transcriptions.create(
        file=open(JFK, "rb"), model="gpt-4o-transcribe", stream=True, include=["logprobs"]))
    deltas, done = events[:-1], events[-1]
    for d in deltas:
        assert d.logprobs and "".join(lp.token for lp in d.logprobs).strip() == d.delta.strip()
        assert all(lp.logprob <= 0 for lp in d.logprobs)
    flat = [lp.logprob for d in deltas for lp in d.logprobs]
    assert [lp.logprob for lp in done.logprobs] == flat
    plain = client.audio.transcriptions.create(file=open(JFK, "rb"), model="gpt-4o-transcribe", include=["logprobs"])
    assert [lp.logprob for lp in plain.logprobs] == pytest.approx(flat, abs=1e-4)


def test_raw_http_event_shapes(http):
    with open(JFK, "rb") as fh, http.stream("POST", "/v1/audio/transcriptions", files={"file": ("j.wav", fh)},
                                           data={"model": "gpt-4o-transcribe", "stream": "true", "include[]": "logprobs"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-accel-buffering"] == "no"  # nginx must not buffer the events (README, behind a proxy)
        events = sse_events(r)
    *deltas, done = events
    for d in deltas:
        assert set(d) == {"type", "delta", "logprobs"} and d["type"] == "transcript.text.delta"
        assert all(set(lp) == {"token", "logprob", "bytes"} for lp in d["logprobs"])
    assert set(done) == {"type", "text", "logprobs", "usage"} and done["type"] == "transcript.text.done"
    assert set(done["usage"]) == {"type", "input_tokens", "input_token_details", "output_tokens", "total_tokens"}
    with open(JFK, "rb") as fh, http.stream("POST", "/v1/audio/transcriptions", files={"file": ("j.wav", fh)},
                                           data={"model": "whisper-1", "stream": "true"}) as r:
        plain = sse_events(r)
    assert all(set(e) == {"type", "delta"} for e in plain[:-1]) and set(plain[-1]) == {"type", "text", "usage"}


def test_silence_streams_an_empty_done(http):
    with open(DATA / "noise_only_8s.wav", "rb") as fh, http.stream(
            "POST", "/v1/audio/transcriptions", files={"file": ("n.wav", fh)}, data={"model": "whisper-1", "stream": "true"}) as r:
        events = sse_events(r)
    assert len(events) == 1 and events[0]["type"] == "transcript.text.done" and events[0]["text"] == ""


def test_deltas_arrive_while_later_audio_decodes(http, server):
    """On a clip of over a minute (three 30 s windows), the first delta leaves while most of the decoding is
    still to do: measured in the server's own CPU time, which counts work done, not how busy the machine is."""
    audio = long_clip(75)
    cpu_start = server.cpu_seconds()
    cpu_at_first = None
    events = []
    with http.stream("POST", "/v1/audio/transcriptions", files={"file": ("long.wav", audio, "audio/wav")},
                     data={"model": "whisper-1", "stream": "true"}) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                events.append(event)
                if event["type"] == "transcript.text.delta" and cpu_at_first is None:
                    cpu_at_first = server.cpu_seconds()
    cpu_total = server.cpu_seconds() - cpu_start
    deltas = [e for e in events if e["type"] == "transcript.text.delta"]
    assert len(deltas) >= 3 and events[-1]["type"] == "transcript.text.done"
    assert events[-1]["text"] == "".join(d["delta"] for d in deltas)
    assert cpu_at_first is not None and cpu_at_first - cpu_start < 0.6 * cpu_total, (cpu_at_first - cpu_start, cpu_total)
    assert "ask not what your country can do for you" in normalize(events[-1]["text"])


def idle_cpu(server, seconds: float = 5.0) -> float:
    """The server's CPU time over `seconds` of wall time."""
    before = server.cpu_seconds()
    time.sleep(seconds)
    return server.cpu_seconds() - before


def test_client_disconnect_stops_decoding(server, http, client):
    client.audio.transcriptions.create(file=open(JFK, "rb"), model="whisper-1")  # worker threads exist already
    threads_before, fds_before = server.threads(), server.open_files()
    audio = long_clip(240)  # several minutes of decoding if nobody stopped it
    with http.stream("POST", "/v1/audio/transcriptions", files={"file": ("long.wav", audio, "audio/wav")},
                     data={"model": "whisper-1", "stream": "true"}) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                break  # first delta: now hang up
    deadline = time.monotonic() + 60  # the decoder stops at its next segment, then the slot is given back
    while http.get("/ready").json()["pools"]["base"]["running"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert http.get("/ready").json()["pools"]["base"]["running"] == 0
    assert "stream ended early" in server.log_text()
    # A decode still running (in any thread) would burn a core: an idle server uses next to no CPU.
    assert idle_cpu(server) < 0.15  # measured idle: 0.01-0.03 s in 5 s
    # The model's only worker is free again: the next request is answered at once, correctly.
    result = client.audio.transcriptions.create(file=open(JFK, "rb"), model="whisper-1")
    assert wer(REFS["jfk.wav"], result.text) <= 0.10
    deadline = time.monotonic() + 20  # idle worker threads may linger a few seconds before they exit
    while server.threads() > threads_before + 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert server.threads() <= threads_before + 2
    assert server.open_files() <= fds_before + 2  # no spooled upload or other file left open


def test_errors_before_the_stream_are_json(http, client):
    r = http.post("/v1/audio/transcriptions", files={"file": ("x.wav", b"not audio" * 50)},
                  data={"model": "whisper-1", "stream": "true"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["param"] == "file"
    with pytest.raises(openai.BadRequestError):
        list(client.audio.transcriptions.create(file=open(JFK, "rb"), model="whisper-1", stream=True, language="xx"))
    with pytest.raises(openai.NotFoundError):
        list(client.audio.transcriptions.create(file=open(JFK, "rb"), model="nope", stream=True))
