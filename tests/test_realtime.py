"""Realtime transcription sessions end to end: the real server on 127.0.0.1, the official SDK's
realtime client (`client.realtime.connect(extra_query={"intent": "transcription"})`) and raw
`websockets`, real speech, transcripts scored against references.

The module's server serves the bundled `tiny.en` weights (this file tests the protocol and the
session's behaviour; accuracy against the file endpoint is measured by scripts/bench_realtime) and
requires an API key. Audio is sent faster than real time except where pacing is the point.
"""

from __future__ import annotations

import base64
import json
import math
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import websockets
from websockets.sync.client import connect as ws_connect

from engines.live_audio import ALAW, ULAW
from tests.conftest import Server, running_server
from tests.helpers import DATA, read_wav, references, shared, wer

KEY = "sk-oyez-realtime-test"
JFK = DATA / "jfk.wav"
LIBRIVOX = DATA / "librivox_0870.wav"


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    log = tmp_path_factory.mktemp("realtime") / "server.log"
    with running_server({"OYEZ_PRELOAD": '["whisper-1"]', "OYEZ_DEFAULT_WEIGHTS": "tiny.en",
                         "OYEZ_API_KEYS": KEY}, log) as srv:
        srv.ws = srv.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
        yield srv


# -- audio helpers ----------------------------------------------------------------------------

def pcm24(samples: np.ndarray) -> bytes:
    """16 kHz float32 -> 24 kHz PCM16 little-endian, as `audio/pcm` wants."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=24000)
    frame = av.AudioFrame.from_ndarray((np.clip(samples, -1, 1) * 32767).astype("<i2").reshape(1, -1),
                                       format="s16", layout="mono")
    frame.sample_rate = 16000
    return b"".join(f.to_ndarray().tobytes() for f in resampler.resample(frame) + resampler.resample(None))


def g711(samples: np.ndarray, table: np.ndarray) -> bytes:
    """16 kHz float32 -> 8 kHz G.711 codes (nearest code of the decoding table)."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)
    frame = av.AudioFrame.from_ndarray((np.clip(samples, -1, 1) * 32767).astype("<i2").reshape(1, -1),
                                       format="s16", layout="mono")
    frame.sample_rate = 16000
    pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in resampler.resample(frame) + resampler.resample(None)])
    order = np.argsort(table, kind="stable")
    values = table[order].astype(np.int32)
    idx = np.clip(np.searchsorted(values, pcm), 1, 255)
    nearer_left = np.abs(pcm - values[idx - 1]) <= np.abs(values[idx] - pcm)
    return order[np.where(nearer_left, idx - 1, idx)].astype(np.uint8).tobytes()


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(16000 * seconds), dtype=np.float32)


def chunks(raw: bytes, size: int):
    for i in range(0, len(raw), size):
        yield base64.b64encode(raw[i : i + size]).decode()


# -- clients ----------------------------------------------------------------------------------

class SdkSession:
    """The SDK's realtime connection, read by a background thread so sending and receiving overlap."""

    def __init__(self, srv: Server, api_key: str = KEY):
        from openai import OpenAI

        self.client = OpenAI(base_url=f"{srv.url}/v1", api_key=api_key, max_retries=0)
        self.manager = self.client.realtime.connect(extra_query={"intent": "transcription"})
        self.events: queue.Queue = queue.Queue()

    def __enter__(self):
        self.conn = self.manager.__enter__()
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.manager.__exit__(*exc)

    def _read(self):
        try:
            for ev in self.conn:
                self.events.put(ev)
        except Exception:
            pass
        self.events.put(None)

    def next(self, timeout: float = 120):
        ev = self.events.get(timeout=timeout)
        assert ev is not None, "the connection closed"
        return ev

    def until(self, kind: str, timeout: float = 180) -> list:
        """Events up to and including the first of type `kind`."""
        seen, deadline = [], time.monotonic() + timeout
        while True:
            ev = self.next(max(0.1, deadline - time.monotonic()))
            seen.append(ev)
            if ev.type == kind:
                return seen


def raw_connect(srv: Server, **kwargs):
    kwargs.setdefault("additional_headers", {"Authorization": f"Bearer {KEY}"})
    return ws_connect(srv.ws, max_size=None, open_timeout=30, **kwargs)


def recv_json(ws, timeout: float = 120) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def until(ws, kind: str, timeout: float = 180) -> list[dict]:
    seen, deadline = [], time.monotonic() + timeout
    while True:
        ev = recv_json(ws, max(0.1, deadline - time.monotonic()))
        seen.append(ev)
        if ev["type"] == kind:
            return seen


def update(kind_format: str = "audio/pcm", turn_detection="server_vad", model="whisper-1", **extra) -> dict:
    audio_input: dict = {"format": {"type": kind_format}, "transcription": {"model": model, "language": "en"}}
    if turn_detection == "server_vad":
        audio_input["turn_detection"] = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                         "silence_duration_ms": 500}
    else:
        audio_input["turn_detection"] = turn_detection
    return {"type": "transcription", "audio": {"input": audio_input}, **extra}


def by_item(events) -> dict[str, dict]:
    """item_id -> {"deltas": [...], "completed": event, ...} from SDK or raw events."""
    items: dict[str, dict] = {}
    for ev in events:
        d = ev if isinstance(ev, dict) else ev.model_dump()
        if "item_id" not in d or d.get("item_id") is None:
            continue
        item = items.setdefault(d["item_id"], {"deltas": []})
        if d["type"].endswith(".delta"):
            item["deltas"].append(d)
        else:
            item[d["type"].rsplit(".", 1)[-1]] = d
    return items


def settle(srv: Server, timeout: float = 60) -> str:
    """Wait until the server has no open realtime session; the /metrics text."""
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(f"{srv.url}/metrics", timeout=10).text
        if re.search(r"^oyez_realtime_sessions 0\.0$", text, re.M) or time.monotonic() > deadline:
            return text
        time.sleep(0.3)


# -- tests ------------------------------------------------------------------------------------

def test_server_vad_turns_with_logprobs_through_the_sdk(rt):
    audio = read_wav(JFK)
    total = np.concatenate([silence(0.5), audio, silence(1.5)])
    with SdkSession(rt) as s:
        created = s.next()
        assert created.type == "session.created" and created.session.type == "transcription"
        assert created.session.audio.input.format.type == "audio/pcm"
        s.conn.session.update(session=update(include=["item.input_audio_transcription.logprobs"]))
        updated = s.next()
        assert updated.type == "session.updated", updated
        assert updated.session.include == ["item.input_audio_transcription.logprobs"]
        assert updated.session.audio.input.transcription.model == "whisper-1"
        for piece in chunks(pcm24(total), 4800 * 2):  # 100 ms pieces, as fast as they go
            s.conn.input_audio_buffer.append(audio=piece)
        s.conn.session.update(session={"type": "transcription"})  # a marker: all audio before it is seen
        events = s.until("session.updated")
        committed = [e for e in events if e.type == "input_audio_buffer.committed"]
        assert len(committed) >= 2  # JFK pauses between phrases
        while sum(e.type.endswith(".completed") for e in events) < len(committed):
            events.append(s.next())
    types = [e.type for e in events]
    assert "error" not in types, [e for e in events if e.type == "error"]
    items = by_item(events)
    order = [e.item_id for e in committed]
    assert committed[0].previous_item_id is None
    assert [e.previous_item_id for e in committed[1:]] == order[:-1]
    duration_ms = len(total) / 16
    last_end = 0
    for item_id in order:
        item = items[item_id]
        start, stop = item["speech_started"]["audio_start_ms"], item["speech_stopped"]["audio_end_ms"]
        assert last_end <= start < stop <= duration_ms + 1, (start, stop)
        last_end = stop
        done = item["completed"]
        assert done["content_index"] == 0 and done["usage"]["type"] == "duration" and done["usage"]["seconds"] > 0
        assert "".join(d["delta"] for d in item["deltas"]) == done["transcript"]
        lps = done["logprobs"]
        assert lps and all(lp["logprob"] <= 0 and isinstance(lp["token"], str) for lp in lps)
        assert [lp for d in item["deltas"] for lp in d["logprobs"]] == lps
        spelled = b"".join(bytes(lp["bytes"]) for lp in lps).decode("utf-8", "replace")
        assert spelled.split() == done["transcript"].split()
    text = " ".join(items[i]["completed"]["transcript"] for i in order)
    assert wer(references()["jfk.wav"], text) <= 0.15, text
    metrics = settle(rt)
    assert re.search(r'oyez_realtime_turns_total\{model="whisper-1",outcome="completed"\} [1-9]', metrics)


def test_text_arrives_while_the_speaker_is_still_speaking(rt):
    """Sent at real-time pace with a turn that never ends on silence: deltas come before any commit."""
    audio = read_wav(LIBRIVOX)
    with SdkSession(rt) as s:
        s.next()
        session = update(model="gpt-4o-transcribe")
        session["audio"]["input"]["turn_detection"]["silence_duration_ms"] = 60_000
        s.conn.session.update(session=session)
        assert s.next().type == "session.updated"
        events: list = []

        def drain():
            while True:
                try:
                    events.append(s.events.get_nowait())
                except queue.Empty:
                    return

        raw = pcm24(audio)
        step = 4800  # 100 ms of 24 kHz PCM16
        started = time.monotonic()
        for n, piece in enumerate(chunks(raw, step)):
            s.conn.input_audio_buffer.append(audio=piece)
            time.sleep(max(0.0, started + (n + 1) * 0.1 - time.monotonic()))
        # Go on speaking "silence" at real-time pace until the first delta (the machine may be slow).
        quiet = base64.b64encode(pcm24(silence(0.1))).decode()
        deadline = time.monotonic() + 150
        while not any(getattr(e, "type", "").endswith(".delta") for e in events) and time.monotonic() < deadline:
            s.conn.input_audio_buffer.append(audio=quiet)
            time.sleep(0.1)
            drain()
        assert any(e.type.endswith(".delta") for e in events), [e.type for e in events]
        assert not any(e.type in ("input_audio_buffer.speech_stopped", "input_audio_buffer.committed") for e in events)
        s.conn.input_audio_buffer.commit()
        events += s.until("conversation.item.input_audio_transcription.completed")
    items = by_item(events)
    assert len(items) == 1
    item = next(iter(items.values()))
    done = item["completed"]
    assert "speech_started" in item and "committed" in item
    assert len(item["deltas"]) >= 1 and "".join(d["delta"] for d in item["deltas"]) == done["transcript"]
    assert done["usage"]["type"] == "tokens" and done["usage"]["output_tokens"] > 0
    assert wer(references()["librivox_0870.wav"], done["transcript"]) <= 0.25, done["transcript"]


def early_finals(srv: Server) -> dict[str, float]:
    text = httpx.get(f"{srv.url}/metrics", timeout=10).text
    return {m[1]: float(m[2]) for m in re.finditer(r'oyez_realtime_early_finals_total\{outcome="(\w+)"\} (\S+)', text)}


@pytest.fixture(scope="module")
def rt_early(tmp_path_factory):
    """A server whose final decodes start 200 ms into a silence (OYEZ_REALTIME_EARLY_FINAL_MS; off by default)."""
    log = tmp_path_factory.mktemp("realtime_early") / "server.log"
    with running_server({"OYEZ_PRELOAD": '["whisper-1"]', "OYEZ_DEFAULT_WEIGHTS": "tiny.en", "OYEZ_API_KEYS": KEY,
                         "OYEZ_REALTIME_EARLY_FINAL_MS": "200"}, log) as srv:
        srv.ws = srv.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
        yield srv


def test_the_final_decode_starts_in_the_silence_and_is_kept_only_if_speech_does_not_come_back(rt_early):
    """One turn: JFK, a 2 s pause (with JFK's own trailing silence still shorter than silence_duration_ms:
    the turn goes on), the Librivox sentence, then silence. The silences are sent at real-time pace and are
    long enough for a partial decode under way to end, so the early final decode starts in each: the first
    is superseded by speech, the second becomes the turn's final decode."""
    rt = rt_early
    before = early_finals(rt)
    first, second = read_wav(JFK), read_wav(LIBRIVOX)
    with SdkSession(rt) as s:
        s.next()
        session = update()
        session["audio"]["input"]["turn_detection"]["silence_duration_ms"] = 4000
        s.conn.session.update(session=session)
        assert s.next().type == "session.updated"

        def send(samples: np.ndarray, pace: bool) -> None:
            for piece in chunks(pcm24(samples), 4800):  # 100 ms pieces
                s.conn.input_audio_buffer.append(audio=piece)
                if pace:
                    time.sleep(0.1)

        send(np.concatenate([silence(0.3), first]), pace=False)
        send(silence(2.0), pace=True)
        send(second, pace=False)
        send(silence(4.5), pace=True)
        events = s.until("conversation.item.input_audio_transcription.completed")
    items = by_item(events)
    assert len(items) == 1, list(items)
    item = next(iter(items.values()))
    done = item["completed"]
    assert "".join(d["delta"] for d in item["deltas"]) == done["transcript"]
    reference = references()["jfk.wav"] + " " + references()["librivox_0870.wav"]
    assert wer(reference, done["transcript"]) <= 0.2, done["transcript"]
    # usage is the committed turn's, not the shorter audio the early decode saw
    turn_s = (item["speech_stopped"]["audio_end_ms"] - item["speech_started"]["audio_start_ms"]) / 1000
    assert done["usage"] == {"type": "duration", "seconds": math.ceil(turn_s)}, (done["usage"], turn_s)
    after = early_finals(rt)
    assert after.get("superseded", 0) > before.get("superseded", 0), (before, after)
    assert after.get("used", 0) == before.get("used", 0) + 1, (before, after)


def test_manual_commit_with_g711_ulaw_through_the_sdk(rt):
    audio = read_wav(LIBRIVOX)
    with SdkSession(rt) as s:
        s.next()
        s.conn.session.update(session=update("audio/pcmu", turn_detection=None))
        shown = s.next()
        assert shown.type == "session.updated" and shown.session.audio.input.turn_detection is None
        for piece in chunks(g711(audio, ULAW), 1600):
            s.conn.input_audio_buffer.append(audio=piece)
        s.conn.input_audio_buffer.commit()
        events = s.until("conversation.item.input_audio_transcription.completed")
        s.conn.input_audio_buffer.commit(event_id="evt_empty_commit")
        err = s.until("error")[-1]
        s.conn.input_audio_buffer.clear()
        assert s.until("input_audio_buffer.cleared")
    types = [e.type for e in events]
    assert "input_audio_buffer.speech_started" not in types and "input_audio_buffer.committed" in types
    done = events[-1]
    assert wer(references()["librivox_0870.wav"], done.transcript) <= 0.25, done.transcript
    assert err.error.code == "input_audio_buffer_commit_empty" and err.error.event_id == "evt_empty_commit"


def test_browser_key_subprotocol_and_g711_alaw_over_raw_websockets(rt):
    audio = read_wav(LIBRIVOX)
    with ws_connect(rt.ws, subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"], open_timeout=30) as ws:
        assert ws.subprotocol == "realtime"
        assert recv_json(ws)["type"] == "session.created"
        ws.send(json.dumps({"type": "session.update", "session": update("audio/pcma", turn_detection=None)}))
        assert recv_json(ws)["type"] == "session.updated"
        for piece in chunks(g711(audio, ALAW), 1600):
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": piece}))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        events = until(ws, "conversation.item.input_audio_transcription.completed")
    assert wer(references()["librivox_0870.wav"], events[-1]["transcript"]) <= 0.25, events[-1]["transcript"]


def test_each_bad_event_gets_an_error_and_the_session_lives_on(rt):
    bad = [
        ("{not json", None, "invalid_json", None),
        (json.dumps({"type": "response.create", "event_id": "e_unknown"}), "e_unknown", "invalid_value", "type"),
        (json.dumps({"type": "input_audio_buffer.append", "event_id": "e_b64", "audio": "%%%not base64%%%"}),
         "e_b64", "invalid_value", "audio"),
        (json.dumps({"type": "input_audio_buffer.append", "event_id": "e_noaudio"}), "e_noaudio",
         "missing_required_parameter", "audio"),
        (json.dumps({"type": "session.update", "event_id": "e_fmt", "session": {"type": "transcription", "audio": {
            "input": {"format": {"type": "audio/wav"}}}}}), "e_fmt", "invalid_value", "session.audio.input.format.type"),
        (json.dumps({"type": "session.update", "event_id": "e_rate", "session": {"type": "transcription", "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 16000}}}}}), "e_rate", "invalid_value",
         "session.audio.input.format.rate"),
        (json.dumps({"type": "session.update", "event_id": "e_param", "session": {"type": "transcription",
                                                                                 "voice": "alloy"}}),
         "e_param", "unknown_parameter", "session.voice"),
        (json.dumps({"type": "session.update", "event_id": "e_diar", "session": update(
            model="gpt-4o-transcribe-diarize")}), "e_diar", "model_not_available",
         "session.audio.input.transcription.model"),
        (json.dumps({"type": "session.update", "event_id": "e_model", "session": update(model="no-such-model")}),
         "e_model", "model_not_found", "session.audio.input.transcription.model"),
        (json.dumps({"type": "session.update", "event_id": "e_realtime", "session": {"type": "realtime"}}),
         "e_realtime", "invalid_value", "session.type"),
        (json.dumps({"type": "session.update", "event_id": "e_vad", "session": {"type": "transcription", "audio": {
            "input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": -5}}}}}), "e_vad",
         "invalid_value", "session.audio.input.turn_detection.silence_duration_ms"),
        (json.dumps({"type": "input_audio_buffer.commit", "event_id": "e_empty"}), "e_empty",
         "input_audio_buffer_commit_empty", None),
    ]
    with raw_connect(rt) as ws:
        assert recv_json(ws)["type"] == "session.created"
        ws.send(json.dumps({"type": "session.update", "session": update(turn_detection=None)}))
        assert recv_json(ws)["type"] == "session.updated"
        for message, event_id, code, param in bad:
            ws.send(message)
            ev = recv_json(ws, 30)
            assert ev["type"] == "error", (message, ev)
            assert ev["event_id"].startswith("event_")
            err = ev["error"]
            assert (err["event_id"], err["code"], err["param"]) == (event_id, code, param), (message, err)
            assert err["type"] == "invalid_request_error" and err["message"]
        ws.send(b"\x00\x01binary garbage")
        assert recv_json(ws)["error"]["code"] == "invalid_json"
        # The session is unharmed: its configuration is what it was, and it still transcribes.
        ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription"}}))
        shown = recv_json(ws)["session"]["audio"]["input"]
        assert shown["format"] == {"type": "audio/pcm", "rate": 24000} and shown["turn_detection"] is None
        assert shown["transcription"]["model"] == "whisper-1"
        for piece in chunks(pcm24(read_wav(JFK)), 48000):
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": piece}))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        done = until(ws, "conversation.item.input_audio_transcription.completed")[-1]
    assert wer(references()["jfk.wav"], done["transcript"]) <= 0.15, done["transcript"]


def _refused(srv: Server, **kwargs) -> int:
    with pytest.raises(websockets.exceptions.InvalidStatus) as info:
        ws_connect(srv.ws, open_timeout=30, **kwargs).close()
    return info.value.response.status_code


def test_api_key_is_checked_at_the_upgrade(rt):
    assert _refused(rt) == 401
    assert _refused(rt, additional_headers={"Authorization": "Bearer sk-wrong"}) == 401
    assert _refused(rt, subprotocols=["realtime", "openai-insecure-api-key.sk-wrong"]) == 401
    with pytest.raises(websockets.exceptions.InvalidStatus) as info:
        with SdkSession(rt, api_key="sk-wrong"):
            pass
    assert info.value.response.status_code == 401
    body = json.loads(info.value.response.body)
    assert body["error"]["code"] == "invalid_api_key" and "sk-wrong" not in info.value.response.body.decode()
    with raw_connect(rt) as ws:  # and the right key gets in
        assert recv_json(ws)["type"] == "session.created"


CLIENT = r"""
import base64, json, sys, time
from websockets.sync.client import connect
ws = connect(sys.argv[1], additional_headers={"Authorization": "Bearer " + sys.argv[2]}, max_size=None)
ws.recv()
ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
    "transcription": {"model": "whisper-1", "language": "en"}, "turn_detection": {"type": "server_vad",
    "silence_duration_ms": 60000}}}}}))
raw = open(sys.argv[3], "rb").read()
for i in range(0, len(raw), 9600):
    ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(raw[i:i + 9600]).decode()}))
    time.sleep(0.05)
if sys.argv[4] == "commit":
    ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
print("sent", flush=True)
time.sleep(600)
"""


def test_a_vanished_client_frees_everything(rt, tmp_path):
    settle(rt)
    with raw_connect(rt) as ws:  # warm: the VAD, a decode, worker threads exist before the baseline
        recv_json(ws)
        ws.send(json.dumps({"type": "session.update", "session": update(turn_detection=None)}))
        recv_json(ws)
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunks(pcm24(read_wav(JFK)), 10**7).__next__()}))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        until(ws, "conversation.item.input_audio_transcription.completed")
    settle(rt)
    time.sleep(12)  # anyio's idle worker threads retire after 10 s
    baseline = {"fds": rt.open_files(), "threads": rt.threads()}
    audio = tmp_path / "speech.pcm"
    audio.write_bytes(pcm24(np.concatenate([read_wav(JFK), read_wav(LIBRIVOX)])))
    clients = [subprocess.Popen([sys.executable, "-c", CLIENT, rt.ws, KEY, str(audio), mode], stdout=subprocess.PIPE,
                                text=True) for mode in ("speak", "speak", "commit")]
    try:
        for c in clients:
            assert c.stdout.readline().strip() == "sent"
        time.sleep(1.0)  # decodes are under way: partials of the open turns, the final of the committed one
    finally:
        for c in clients:
            c.kill()  # gone without a close frame
            c.wait()
    metrics = settle(rt)
    assert re.search(r"^oyez_realtime_sessions 0\.0$", metrics, re.M), metrics
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the decodes already under way finish, then free their slots
        ready = httpx.get(f"{rt.url}/ready", timeout=10).json()
        running = sum(p["running"] + p["queued"] for p in ready["pools"].values())
        if not running:
            break
        time.sleep(0.5)
    assert running == 0, ready
    # anyio retires worker threads idle for 10 s when the next job is handed out: wait, then hand one out.
    # A decode that finished late leaves its worker idle later, so allow three such rounds before judging.
    for _ in range(3):
        time.sleep(11)
        with raw_connect(rt) as ws:
            assert recv_json(ws)["type"] == "session.created"
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(4800)).decode()}))
            ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
            assert until(ws, "input_audio_buffer.cleared")
        settle(rt)
        time.sleep(1)  # retired workers exit
        if rt.threads() <= baseline["threads"] + 2 and rt.open_files() <= baseline["fds"] + 2:
            break
    names = sorted(p.read_text().strip() for p in Path(f"/proc/{rt.pid}/task").glob("*/comm"))
    assert rt.open_files() <= baseline["fds"] + 2, (baseline, rt.open_files())
    assert rt.threads() <= baseline["threads"] + 2, (baseline, names)
    assert "oyez_realtime_turns_total" in metrics
    with raw_connect(rt) as ws:  # the server is fine
        assert recv_json(ws)["type"] == "session.created"


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    log = tmp_path_factory.mktemp("realtime_capped") / "server.log"
    with running_server({"OYEZ_PRELOAD": "[]", "OYEZ_MAX_REALTIME_SESSIONS": "1",
                         "OYEZ_REALTIME_MAX_SESSION_SECONDS": "4"}, log) as srv:
        srv.ws = srv.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
        yield srv


def test_session_cap_and_session_length(capped):
    with ws_connect(capped.ws, open_timeout=30) as first:
        assert recv_json(first)["type"] == "session.created"
        opened = time.monotonic()
        with ws_connect(capped.ws, open_timeout=30) as second:
            ev = recv_json(second)
            assert ev["type"] == "error" and ev["error"]["code"] == "rate_limit_exceeded", ev
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                second.recv(timeout=10)
            assert closed.value.rcvd.code == 1013
        ev = recv_json(first, 30)
        assert ev["type"] == "error" and ev["error"]["code"] == "session_expired", ev
        assert 3.5 <= time.monotonic() - opened <= 20
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            first.recv(timeout=10)
    settle(capped)
    with ws_connect(capped.ws, open_timeout=30) as again:  # the place is free again
        assert recv_json(again)["type"] == "session.created"


def test_turns_of_en_asr_clips_over_raw_websockets(rt):
    """Three read sentences from ../shared/data/en_asr with pauses between: one turn each."""
    from engines.audio import decode_audio
    from tests.helpers import read_tsv

    root = shared("en_asr")
    rows = {r["file"]: r for r in read_tsv(root / "references.tsv")}
    names = ["audio/ps_librivox_0880.wav", "audio/ps_librivox_0890.wav", "audio/ps_librivox_0870.wav"]
    parts = []
    for name in names:
        parts += [decode_audio(str(root / name)).samples, silence(1.5)]
    with raw_connect(rt) as ws:
        recv_json(ws)
        ws.send(json.dumps({"type": "session.update", "session": update()}))
        recv_json(ws)
        for piece in chunks(pcm24(np.concatenate([silence(0.5), *parts])), 24000):
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": piece}))
        events: list[dict] = []
        while sum(e["type"].endswith(".completed") for e in events) < len(names):
            events.append(recv_json(ws, 180))
    items = by_item(events)
    assert len([e for e in events if e["type"] == "input_audio_buffer.committed"]) == len(names)
    texts = [item["completed"]["transcript"] for item in items.values()]
    assert all(texts) and all("".join(d["delta"] for d in item["deltas"]) == item["completed"]["transcript"]
                              for item in items.values())
    reference = " ".join(rows[name]["transcript_plain"] for name in names)
    assert wer(reference, " ".join(texts)) <= 0.2, texts  # tiny.en: one word of a sentence may go wrong
    # The second and third turns are decoded after the turn before them (engines/live_context.py): each
    # transcript is its own sentence only, and usage counts its own audio.
    for name, item in zip(names, items.values()):
        assert wer(rows[name]["transcript_plain"], item["completed"]["transcript"]) <= 0.34, item["completed"]
        assert item["completed"]["usage"]["seconds"] <= float(rows[name]["duration_s"]) + 2.5, item["completed"]


def test_quiet_sessions_hold_no_decode_slot(rt):
    """Open sessions that send nothing (or silence) take no run slot: a file request goes straight through."""
    sockets = [raw_connect(rt) for _ in range(6)]
    try:
        for ws in sockets:
            assert recv_json(ws)["type"] == "session.created"
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(48000)).decode()}))
        ready = httpx.get(f"{rt.url}/ready", timeout=30).json()
        assert all(p["running"] == 0 and p["queued"] == 0 for p in ready["pools"].values()), ready
        metrics = httpx.get(f"{rt.url}/metrics", timeout=30).text
        assert re.search(r"^oyez_realtime_sessions 6\.0$", metrics, re.M), metrics
        with open(JFK, "rb") as fh:
            r = httpx.post(f"{rt.url}/v1/audio/transcriptions", files={"file": ("jfk.wav", fh, "audio/wav")},
                           data={"model": "whisper-1"}, headers={"Authorization": f"Bearer {KEY}"}, timeout=300)
        assert r.status_code == 200, r.text
        assert r.headers["x-oyez-queue-ms"] == "0"
        assert wer(references()["jfk.wav"], r.json()["text"]) <= 0.15
    finally:
        for ws in sockets:
            ws.close()


def test_a_conversation_intent_is_refused(rt):
    url = rt.ws.replace("intent=transcription", "intent=conversation")
    with ws_connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}, open_timeout=30) as ws:
        ev = recv_json(ws)
        assert ev["type"] == "error" and ev["error"]["param"] == "intent", ev
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1008
