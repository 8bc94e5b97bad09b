"""Unit: decoding to 16 kHz mono float32 from any container, and clean failures."""

from __future__ import annotations

import io

import numpy as np
import pytest

from engines.audio import SAMPLE_RATE, decode_audio
from engines.errors import AudioDecodeError, AudioTooLongError
from tests.helpers import DATA, SHARED, read_tsv, shared, wav_bytes


@pytest.mark.parametrize("name, seconds", [("jfk.wav", 11.0), ("p001.mp3", 9.01), ("test_es.wav", 8.66)])
def test_committed_clips(name, seconds):
    audio = decode_audio(str(DATA / name))
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1 and audio.sample_rate == SAMPLE_RATE
    assert audio.duration == pytest.approx(seconds, abs=0.05)
    assert 0.1 < float(np.abs(audio.samples).max()) <= 1.0


def test_file_object_and_rate_conversion():
    tone = np.sin(2 * np.pi * 440 * np.arange(44100 * 2) / 44100).astype(np.float32) * 0.5
    audio = decode_audio(io.BytesIO(wav_bytes(tone, rate=44100)))
    assert audio.duration == pytest.approx(2.0, abs=0.01)
    spectrum = np.abs(np.fft.rfft(audio.samples))
    assert np.argmax(spectrum) * SAMPLE_RATE / len(audio.samples) == pytest.approx(440, abs=2)


def test_duration_limit():
    with pytest.raises(AudioTooLongError):
        decode_audio(str(DATA / "jfk.wav"), max_seconds=5)


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, b"RIFF\x24\x00\x00\x00WAVEfmt ", b"ID3" + b"\xff" * 300])
def test_garbage_raises_decode_error(content):
    with pytest.raises(AudioDecodeError):
        decode_audio(io.BytesIO(content))


def test_every_shared_format_decodes():
    rows = read_tsv(shared("formats/references.tsv"))
    for row in rows:
        if not row["file"].startswith("audio/"):
            continue
        audio = decode_audio(str(SHARED / "formats" / row["file"]))
        assert audio.duration == pytest.approx(float(row["duration_s"]), abs=0.5), row["file"]


def test_decoding_leaves_no_threads_behind():
    """PyAV 18.1.1 gave the resampler's filter graph worker threads that outlive the decode until the garbage
    collector runs: two more threads per request in a server (found by the hostile and disconnect tests)."""
    import gc
    import os

    def threads() -> int:
        return len(os.listdir("/proc/self/task"))

    gc.disable()  # what a busy server sees between collections
    try:
        decode_audio(str(DATA / "p001.mp3"))
        before = threads()
        for _ in range(5):
            decode_audio(str(DATA / "p001.mp3"))
            decode_audio(io.BytesIO((DATA / "jfk.wav").read_bytes()))
        assert threads() <= before, (before, threads())
    finally:
        gc.enable()
