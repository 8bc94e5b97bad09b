"""The model-call scheduler (engines/batching.py): merging concurrent requests' calls, lanes and the core budget.

Engine-level tests run the real model on real speech and compare against the references; the
scheduling rules (which lane, never more cores than the budget, errors reach their caller) are
checked on a recording stand-in for the CTranslate2 model, where timing can be controlled.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from engines.audio import Audio, decode_audio
from engines.batching import CrossRequestBatcher, Lane, _common_context
from engines.bundled import bundled_path
from engines.types import TranscribeOptions
from tests.helpers import DATA, assert_timeline, references, wer

REFS = references()
CLIPS = ["jfk.wav", "librivox_0870.wav"]


@pytest.fixture(scope="module")
def model_dir():
    return bundled_path("base", Path("~/.cache/oyez").expanduser())


@pytest.fixture(scope="module")
def clips():
    return {name: decode_audio(str(DATA / name)) for name in CLIPS}


def test_merged_calls_give_every_request_its_own_text(model_dir, clips):
    """Six requests at once on one one-slot replica: their windows share calls, each gets its own transcript."""
    from engines.whisper import FasterWhisperEngine

    engine = FasterWhisperEngine(model_dir, device="cpu", compute_type="int8", cpu_threads=2, num_workers=1,
                                 max_batch=4)
    names = CLIPS * 3
    options = TranscribeOptions(language="en", word_timestamps=True)
    with ThreadPoolExecutor(len(names)) as pool:
        transcripts = list(pool.map(lambda n: engine.transcribe(clips[n], options).collect(), names))
    for name, transcript in zip(names, transcripts):
        assert wer(REFS[name], transcript.text) <= 0.10, (name, transcript.text)
        assert_timeline(transcript.segments, clips[name].duration)
        assert_timeline(transcript.words, clips[name].duration)  # alignment went through the batcher too
    stats = engine.call_stats()
    assert stats.merged.get("encode", 0) >= 2 and stats.merged.get("generate", 0) >= 2, stats.__dict__
    assert stats.rows["encode"] > sum(n for (kind, _), n in stats.calls.items() if kind == "encode")
    engine.close()


def test_merged_windows_with_previous_text_stay_accurate(model_dir, clips):
    """Two long recordings at once: windows after the first carry previous text, cut to a common length."""
    from engines.whisper import FasterWhisperEngine

    jfk, other = clips["jfk.wav"].samples, clips["librivox_0870.wav"].samples
    pause = np.zeros(8000, np.float32)
    long_a = Audio(np.concatenate([jfk, pause, other, pause, jfk, pause, other, pause, jfk]))
    long_b = Audio(np.concatenate([other, pause, jfk, pause, other, pause, jfk, pause, other]))
    ref_a = " ".join([REFS["jfk.wav"], REFS["librivox_0870.wav"]] * 2 + [REFS["jfk.wav"]])
    ref_b = " ".join([REFS["librivox_0870.wav"], REFS["jfk.wav"]] * 2 + [REFS["librivox_0870.wav"]])
    engine = FasterWhisperEngine(model_dir, device="cpu", compute_type="int8", cpu_threads=2, num_workers=1,
                                 max_batch=4)
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda audio: engine.transcribe(audio, TranscribeOptions(language="en")).collect(),
                        [long_a, long_b])
    assert wer(ref_a, a.text) <= 0.10, a.text
    assert wer(ref_b, b.text) <= 0.10, b.text
    assert engine.call_stats().merged.get("generate", 0) >= 2
    engine.close()


def test_a_lone_request_decodes_on_every_core_and_concurrent_ones_on_replicas(model_dir, clips):
    from engines.whisper import FasterWhisperEngine

    engine = FasterWhisperEngine(model_dir, device="cpu", compute_type="int8", cpu_threads=1, num_workers=2,
                                 solo_threads=2)
    lone = engine.transcribe(clips["jfk.wav"], TranscribeOptions(language="en")).collect()
    assert wer(REFS["jfk.wav"], lone.text) <= 0.10
    assert {lane for _, lane in engine.call_stats().calls} == {"solo"}
    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda n: engine.transcribe(clips[n], TranscribeOptions(language="en")).collect().text,
                              CLIPS * 2))
    assert all(wer(REFS[n], t) <= 0.10 for n, t in zip(CLIPS * 2, texts))
    assert any(lane == "replicas" for _, lane in engine.call_stats().calls)
    assert engine.batcher.active == 0  # every finished stream stopped counting
    engine.close()


def test_an_abandoned_stream_stops_counting(model_dir, clips):
    from engines.whisper import FasterWhisperEngine

    engine = FasterWhisperEngine(model_dir, device="cpu", compute_type="int8", cpu_threads=1, num_workers=2,
                                 solo_threads=2)
    stream = engine.transcribe(clips["jfk.wav"], TranscribeOptions(language="en"))
    assert engine.batcher.active == 1
    stream.close()  # never iterated
    assert engine.batcher.active == 0
    engine.close()


def test_common_context_keeps_the_latest_previous_tokens():
    sot, prev = 50258, 50361
    prompts = [[prev, 1, 2, 3, 4, sot, 9, 10], [prev, 7, 8, sot, 11, 12]]
    assert _common_context(prompts, sot) == [[prev, 3, 4, sot, 9, 10], [prev, 7, 8, sot, 11, 12]]


class _Recorder:
    """Stands in for ctranslate2.models.Whisper: records how many calls (and cores) run at once."""

    def __init__(self, name: str, cost: int, meter: dict, delay: float = 0.05):
        self.name, self.cost, self.meter, self.delay = name, cost, meter, delay
        self.is_multilingual = True

    def encode(self, features, to_cpu=False):
        with self.meter["lock"]:
            self.meter["cores"] += self.cost
            self.meter["peak"] = max(self.meter["peak"], self.meter["cores"])
            self.meter["lanes"].append((self.name, features.shape[0]))
        time.sleep(self.delay)
        with self.meter["lock"]:
            self.meter["cores"] -= self.cost
        return np.asarray(features) * 2

    def generate(self, features, prompts, **options):
        if options.get("beam_size") == 0:
            raise ValueError("beam_size must be positive")
        return [f"{self.name}:{len(p)}" for p in prompts]


def _batcher(meter, max_batch=1):
    lanes = [Lane(_Recorder("solo", 2, meter), name="solo", cost=2, slots=1, solo=True),
             Lane(_Recorder("replicas", 1, meter), cost=1, slots=2)]
    return CrossRequestBatcher(lanes, sot=50258, max_batch=max_batch, cores=2)


def _meter():
    return {"lock": threading.Lock(), "cores": 0, "peak": 0, "lanes": []}


def test_the_budget_holds_and_the_solo_lane_serves_only_a_lone_request():
    meter = _meter()
    batcher = _batcher(meter)
    features = np.ones((1, 80, 3000), np.float32)
    batcher.enter()
    out = batcher.encode(features)
    assert np.asarray(out)[0, 0, 0] == 2.0 and meter["lanes"] == [("solo", 1)]
    for _ in range(5):
        batcher.enter()
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: [batcher.encode(features) for _ in range(4)], range(6)))
    assert meter["peak"] <= 2  # never more cores than the machine has
    assert sum(lane == "replicas" for lane, _ in meter["lanes"]) >= 20
    assert batcher.is_multilingual  # attribute reads fall through to the model
    batcher.close()


def test_merging_respects_max_batch_and_errors_reach_their_caller():
    meter = _meter()
    batcher = _batcher(meter, max_batch=3)
    features = np.ones((1, 80, 3000), np.float32)
    for _ in range(8):
        batcher.enter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: batcher.encode(features), range(8)))
    assert max(rows for _, rows in meter["lanes"]) <= 3
    assert batcher.stats.merged.get("encode", 0) >= 2
    with pytest.raises(ValueError, match="beam_size"):
        batcher.generate(np.ones((1, 1500, 512), np.float32), [[50258, 1]], beam_size=0)
    assert batcher.generate(np.ones((1, 1500, 512), np.float32), [[50258, 1]], beam_size=5) == ["replicas:2"]
    before = threading.active_count()
    batcher.close()
    assert threading.active_count() <= before - 2  # its dispatcher threads are gone
    with pytest.raises(RuntimeError):
        batcher.encode(features)


def test_only_encodings_of_equal_length_merge():
    """A trimmed window (engines/whisper_model.py) has fewer frames than a whole one: they cannot share a call."""
    meter = _meter()
    batcher = _batcher(meter, max_batch=8)
    whole, trimmed = np.ones((1, 80, 3000), np.float32), np.ones((1, 80, 2200), np.float32)
    for _ in range(8):
        batcher.enter()
    with ThreadPoolExecutor(8) as pool:
        outputs = list(pool.map(lambda i: batcher.encode(whole if i % 2 else trimmed), range(8)))
    assert [np.asarray(o).shape[-1] for o in outputs] == [2200, 3000] * 4
    assert batcher.stats.merged.get("encode", 0) >= 1  # equal lengths still merge
    batcher.close()
