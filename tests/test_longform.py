"""Unit: where long audio is cut into windows, decoded samples gathered without whole-signal copies,
and the batched decoder's temperature fallback."""

from __future__ import annotations

import numpy as np
from faster_whisper.transcribe import Segment

from engines.audio import SampleBlocks
from engines.batched import needs_fallback, recover
from engines.longform import plan_windows

RATE = 16_000


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.3, int(seconds * RATE)).astype(np.float32)


def test_short_audio_is_one_window():
    x = speechlike(70)
    assert plan_windows(x, RATE, 60) == [(0, len(x))]  # under 1.25 windows
    assert plan_windows(x, RATE, 0) == [(0, len(x))]  # windowing off


def test_windows_cover_the_signal_and_cut_in_the_pauses():
    # 5 x (50 s of "speech" + 2 s of silence): the cuts must land in the silences.
    pieces, silences = [], []
    pos = 0
    for i in range(5):
        pieces.append(speechlike(50, i))
        pos += 50 * RATE
        pieces.append(np.zeros(2 * RATE, dtype=np.float32))
        silences.append((pos, pos + 2 * RATE))
        pos += 2 * RATE
    x = np.concatenate(pieces)
    windows = plan_windows(x, RATE, 60)
    assert len(windows) == 5
    assert windows[0][0] == 0 and windows[-1][1] == len(x)
    assert all(a < b for a, b in windows)
    assert all(windows[i][1] == windows[i + 1][0] for i in range(len(windows) - 1))  # contiguous, no overlap
    for _, cut in windows[:-1]:
        assert any(lo <= cut < hi for lo, hi in silences), cut / RATE
    assert max(b - a for a, b in windows) <= 60 * RATE


def test_sample_blocks_join_equals_concatenation(monkeypatch):
    monkeypatch.setattr(SampleBlocks, "BLOCK", 50_000)  # many blocks from a small signal
    rng = np.random.default_rng(1)
    frames = [rng.normal(size=n).astype(np.float32) for n in rng.integers(1, 5000, size=900)]
    frames.append(rng.normal(size=SampleBlocks.BLOCK + 7).astype(np.float32))  # larger than a block
    blocks = SampleBlocks()
    for f in frames:
        blocks.append(f)
    joined = blocks.join()
    np.testing.assert_array_equal(joined, np.concatenate(frames))
    assert blocks.blocks == []  # every block released
    small = SampleBlocks()
    small.append(np.ones(10, dtype=np.float64))
    out = small.join()
    assert out.dtype == np.float32 and out.tolist() == [1.0] * 10
    broken = SampleBlocks()
    broken.append(np.array([0.5, np.nan, np.inf, -np.inf], dtype=np.float32))
    assert broken.join().tolist() == [0.5, 0.0, 0.0, 0.0]


def seg(seek, start, end, text, avg_logprob=-0.2, no_speech_prob=0.01):
    return Segment(id=0, seek=seek, start=start, end=end, text=text, tokens=[], avg_logprob=avg_logprob,
                   compression_ratio=1.0, no_speech_prob=no_speech_prob, words=None, temperature=0.0)


def test_fallback_rule_is_whispers():
    assert not needs_fallback([seg(0, 0, 5, " A normal sentence about the weather.")])
    assert needs_fallback([seg(0, 0, 5, " the the the the the the the the the the the the the the the the")])
    assert needs_fallback([seg(0, 0, 5, " mumble", avg_logprob=-1.5)])
    assert not needs_fallback([seg(0, 0, 5, "", avg_logprob=-1.5, no_speech_prob=0.9)])  # probably silence


def test_failed_chunks_and_dropped_ends_are_decoded_again_sequentially():
    calls = []

    class FakeModel:
        frames_per_second = 100

        def transcribe(self, samples, **kwargs):
            calls.append((len(samples), kwargs))
            return iter([seg(0, 0.5, 2.0, f" again{len(calls)}", avg_logprob=-0.3)]), None

    chunks = [(0.0, 3.5), (30.0, 33.0), (60.0, 66.0)]
    batched = [
        seg(0, 0.0, 3.0, " good one"),  # ends 0.5 s before its chunk: nothing dropped
        seg(3000, 30.0, 31.0, " bad", avg_logprob=-2.0),  # one chunk of two segments, failed
        seg(3000, 31.0, 33.0, " bad", avg_logprob=-2.0),
        seg(6000, 60.0, 62.0, " good two"),  # the model stopped 4 s before the chunk's end
    ]
    samples = np.zeros(70 * RATE, dtype=np.float32)
    retry = {"temperature": [0.0, 0.2, 0.4], "vad_filter": True, "language": "en"}
    out = list(recover(FakeModel(), samples, batched, chunks, retry, fallback=True))
    assert [s.text for s in out] == [" good one", " again1", " good two", " again2"]
    (n1, kw1), (n2, kw2) = calls
    assert kw1 == dict(retry, temperature=[0.2, 0.4])  # the failed chunk: the rest of the ladder
    assert n1 == int(33.2 * RATE) - int(29.8 * RATE)  # the chunk plus 0.2 s either side
    assert kw2 == retry  # the dropped end: decoded as the sequential decoder would
    assert n2 == int(66.2 * RATE) - int(62.0 * RATE)  # from the end of the text to the chunk's end
    fixed, tail = out[1], out[3]
    assert abs(fixed.start - 30.3) < 1e-6 and abs(fixed.end - 31.8) < 1e-6  # on the file's timeline
    assert abs(tail.start - 62.5) < 1e-6 and tail.seek == 6000
    assert not list(recover(FakeModel(), samples, batched[:1], chunks, retry, fallback=False))[1:]


def test_chunks_merge_speech_up_to_thirty_seconds():
    from faster_whisper.vad import VadOptions

    from engines.audio import decode_audio
    from engines.batched import plan_chunks
    from tests.helpers import DATA

    jfk = decode_audio(str(DATA / "jfk.wav")).samples  # 11 s of speech
    x = np.concatenate([jfk, np.zeros(3 * RATE, np.float32), jfk, np.zeros(3 * RATE, np.float32), jfk])
    chunks = plan_chunks(x, VadOptions(min_silence_duration_ms=1000))
    assert len(chunks) == 2 and all(b - a <= 30.0 for a, b in chunks)
    assert chunks[0][0] < 1.0 and chunks[1][1] > len(x) / RATE - 1.5
    assert plan_chunks(np.zeros(65 * RATE, np.float32), None) == [(0.0, 30.0), (30.0, 60.0), (60.0, 65.0)]


def test_early_first_window_is_cut_in_a_pause_of_the_first_seconds():
    from engines.longform import split_first

    # 5.5 s of "speech", 0.4 s of silence, then 40 s more: the first window ends in that silence.
    x = np.concatenate([speechlike(5.5, 1), np.zeros(int(0.4 * RATE), dtype=np.float32), speechlike(40, 2)])
    windows = split_first(x, RATE, [(0, len(x))])
    assert len(windows) == 2 and windows[0][0] == 0 and windows[1][1] == len(x)
    assert windows[0][1] == windows[1][0] and 5.5 * RATE <= windows[0][1] <= 5.9 * RATE
    long = plan_windows(speechlike(200, 3), RATE, 60)
    split = split_first(speechlike(200, 3), RATE, long)
    assert split[2:] == long[1:] and split[1][1] == long[0][1]  # only the first window is cut
    short = speechlike(12, 4)
    assert split_first(short, RATE, [(0, len(short))]) == [(0, len(short))]  # too short to gain from it
