"""Unit: the decode deadline and the speaker-reference checks, with fake segments (end to end in test_hostile)."""

from __future__ import annotations

import time

import anyio
import pytest

from engines.types import AudioInfo, Segment, TranscriptionStream
from server.decoding import Decoding, RequestTimeout


def collect_within(start, timeout_s, gone=None):
    """The JSON path's use of the stream driver."""
    return Decoding(start, timeout_s, gone).collect()


def seg(i: int) -> Segment:
    return Segment(id=i, seek=0, start=float(i), end=i + 0.9, text=f" word{i}", tokens=[1], temperature=0.0,
                   avg_logprob=-0.1, compression_ratio=1.0, no_speech_prob=0.0, text_token_count=1)


class SlowSource:
    """Yields `count` segments, `delay` seconds apart, and records whether it was closed and how far it got."""

    def __init__(self, count: int, delay: float):
        self.count, self.delay, self.produced, self.closed = count, delay, 0, False

    def stream(self) -> TranscriptionStream:
        def gen():
            try:
                for i in range(self.count):
                    time.sleep(self.delay)
                    self.produced += 1
                    yield seg(i)
            finally:
                self.closed = True
        return TranscriptionStream(gen(), language="en", language_probability=1.0, audio=AudioInfo(9.0, 9.0),
                                   prompt_tokens=0, task="transcribe")


def test_collects_everything_within_the_deadline():
    source = SlowSource(4, 0.0)
    transcript = anyio.run(collect_within, source.stream, 60.0)
    assert [s.id for s in transcript.segments] == [0, 1, 2, 3]
    assert transcript.text == "word0 word1 word2 word3" and transcript.audio.duration == 9.0
    assert source.closed


def test_stops_the_decoder_at_the_deadline():
    source = SlowSource(100, 0.05)
    with pytest.raises(RequestTimeout) as info:
        anyio.run(collect_within, source.stream, 0.2)
    assert info.value.status == 504 and info.value.code == "timeout"
    assert source.closed and source.produced < 20  # stopped, not run to the end


def test_stops_the_decoder_when_the_client_is_gone():
    source = SlowSource(100, 0.01)
    calls = 0

    async def gone() -> bool:
        nonlocal calls
        calls += 1
        return calls >= 3

    assert anyio.run(collect_within, source.stream, 60.0, gone) is None
    assert source.closed and source.produced == 3
