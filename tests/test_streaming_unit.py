"""Unit: the event layer, with fake segments (the real engine is covered end to end)."""

from __future__ import annotations

import json

import anyio
import pytest

from engines.errors import AudioDecodeError
from engines.types import AudioInfo, Segment, TokenLogprob, TranscriptionStream
from server.decoding import Decoding
from server.errors import error_body
from server.streaming import EventBuilder, sse_data, stream_events


def seg(i, text, speaker=None):
    return Segment(id=i, seek=0, start=float(i), end=i + 0.9, text=text, tokens=[1, 2], temperature=0.0,
                   avg_logprob=-0.1, compression_ratio=1.0, no_speech_prob=0.0, text_token_count=1,
                   logprobs=[TokenLogprob(text, -0.5, list(text.encode()))], speaker=speaker)


def fake_stream(segments, fail_after=None):
    def gen():
        for i, s in enumerate(segments):
            if fail_after is not None and i == fail_after:
                raise AudioDecodeError("the decoder broke")
            yield s
    return TranscriptionStream(gen(), language="en", language_probability=1.0, audio=AudioInfo(3.0, 3.0),
                               prompt_tokens=0, task="transcribe")


def collect(start, include_logprobs=False):
    async def run():
        events = stream_events(Decoding(start, 60.0), EventBuilder(include_logprobs), error_body)
        return [json.loads(m["data"]) async for m in events]
    return anyio.run(run)


def test_diarized_segments_get_segment_events_and_ids():
    builder = EventBuilder(include_logprobs=False, segment_events=True)  # response_format=diarized_json
    events = builder.on_segment(seg(0, " Thanks for calling.", "agent")) + builder.on_segment(seg(1, " Hi there.", "A"))
    assert [e["type"] for e in events] == ["transcript.text.delta", "transcript.text.segment"] * 2
    assert events[0] == {"type": "transcript.text.delta", "delta": "Thanks for calling.", "segment_id": "seg_001"}
    assert events[1] == {"type": "transcript.text.segment", "id": "seg_001", "start": 0.0, "end": 0.9,
                         "text": "Thanks for calling.", "speaker": "agent"}
    assert events[2]["delta"] == " Hi there." and events[3]["speaker"] == "A" and events[3]["id"] == "seg_002"


def test_plain_segments_have_no_segment_fields():
    events = collect(lambda: fake_stream([seg(0, " One."), seg(1, " Two.")]), include_logprobs=True)
    assert [e["type"] for e in events] == ["transcript.text.delta"] * 2 + ["transcript.text.done"]
    assert events[-1]["text"] == "One. Two." and len(events[-1]["logprobs"]) == 2
    assert "segment_id" not in events[0] and events[-1]["usage"]["type"] == "tokens"


def test_failure_mid_stream_ends_with_an_error_event():
    events = collect(lambda: fake_stream([seg(0, " One."), seg(1, " Two.")], fail_after=1))
    assert events[0]["type"] == "transcript.text.delta"
    assert events[-1] == {"type": "error", "error": {"message": "the decoder broke", "type": "invalid_request_error",
                                                     "param": "file", "code": "invalid_audio"}}


def test_unexpected_failure_hides_internals():
    def start():
        raise RuntimeError("secret internal detail")
    events = collect(start)
    assert events == [{"type": "error", "error": {"message": "The server had an error while processing your request.",
                                                  "type": "server_error", "param": None, "code": None}}]
    assert "secret" not in json.dumps(events)


@pytest.mark.parametrize("n", [0, 1])
def test_closing_stops_the_source(n):
    closed = []

    def gen():
        try:
            yield seg(0, " One.")
            yield seg(1, " Two.")
        finally:
            closed.append(True)

    stream = TranscriptionStream(gen(), language="en", language_probability=1.0, audio=AudioInfo(3.0, 3.0),
                                 prompt_tokens=0, task="transcribe")

    async def run():
        agen = stream_events(Decoding(lambda: stream, 60.0), EventBuilder(False), error_body)
        for _ in range(n + 1):
            await agen.__anext__()
        await agen.aclose()

    anyio.run(run)
    assert closed == [True]


def test_keep_alive_pings_flow_while_a_decode_step_is_in_progress():
    """A segment that takes long to decode (a gate the test opens) leaves the stream silent: keep-alive
    comments must go out meanwhile, and the held slot is released when the stream ends."""
    from server.streaming import HeldEventSourceResponse

    gate = anyio.Event()
    sent: list[bytes] = []
    released = []

    async def events():
        await gate.wait()  # the decode step in flight
        yield sse_data({"type": "transcript.text.done", "text": "x"})

    async def release():
        released.append(True)

    async def scenario():
        response = HeldEventSourceResponse(events(), release=release, ping=0.01, sep="\n")

        async def receive():
            await anyio.sleep_forever()  # the client never hangs up

        async def send(message):
            if message["type"] == "http.response.body":
                sent.append(message.get("body", b""))
                if sum(b.startswith(b": ping") for b in sent) >= 2:
                    gate.set()  # two pings seen before any event: now the step may finish

        with anyio.fail_after(30):
            await response({"type": "http", "method": "GET", "headers": []}, receive, send)

    anyio.run(scenario)
    bodies = [b for b in sent if b]
    pings = [i for i, b in enumerate(bodies) if b.startswith(b": ping")]
    event = next(i for i, b in enumerate(bodies) if b.startswith(b"data: "))
    assert len(pings) >= 2 and pings[1] < event  # the pings came while the step was running
    assert json.loads(bodies[event][len(b"data: "):]) == {"type": "transcript.text.done", "text": "x"}
    assert released == [True]
