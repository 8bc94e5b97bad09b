"""Engine level, real model and speech: batched decoding (OYEZ_BATCH_SIZE) through faster-whisper's
BatchedInferencePipeline, with and without VAD, and the window path, give the right text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.audio import Audio, decode_audio
from engines.bundled import bundled_path
from engines.types import TranscribeOptions
from tests.helpers import DATA, assert_timeline, references, wer

REFS = references()


@pytest.fixture(scope="module")
def model_dir():
    return bundled_path("base", Path("~/.cache/oyez").expanduser())


@pytest.mark.parametrize("vad", [True, False], ids=["vad", "no-vad"])
def test_batched_engine_transcribes_real_speech(model_dir, vad):
    from engines.whisper import FasterWhisperEngine

    engine = FasterWhisperEngine(model_dir, device="cpu", compute_type="int8", batch_size=4)
    audio = decode_audio(str(DATA / "jfk.wav"))
    options = TranscribeOptions(word_timestamps=True) if vad else TranscribeOptions(word_timestamps=True, vad=None)
    transcript = engine.transcribe(audio, options).collect()
    assert wer(REFS["jfk.wav"], transcript.text) <= 0.10
    assert transcript.language == "en"
    assert_timeline(transcript.segments, audio.duration)
    assert_timeline(transcript.words, audio.duration)
    engine.close()


def test_windows_of_a_short_file_match_the_whole(model_dir):
    """Two clips with a pause between, in windows of 12 s: both transcribed, times on the file's timeline."""
    from engines.whisper import FasterWhisperEngine

    engine = FasterWhisperEngine(model_dir, device="cpu", compute_type="int8", window_seconds=12)
    jfk, other = (decode_audio(str(DATA / n)).samples for n in ("jfk.wav", "librivox_0870.wav"))
    samples = np.concatenate([jfk, np.zeros(16000, np.float32), other])
    transcript = engine.transcribe(Audio(samples), TranscribeOptions()).collect()
    assert wer(REFS["jfk.wav"] + " " + REFS["librivox_0870.wav"], transcript.text) <= 0.10
    assert transcript.segments[-1].start >= len(jfk) / 16000  # the second clip's text sits after the first
    assert [s.id for s in transcript.segments] == list(range(len(transcript.segments)))
    assert transcript.audio.speech_duration > 15  # both windows' speech counts
