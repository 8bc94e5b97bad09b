"""scripts/simulate_conversations: its RTTM against its own mixing (no models, synthetic voices).

The voices are harmonic "syllables" with pauses, so the checks need neither ../shared nor torch;
one test loads the real pool (skipping without ../shared) to check that the halves share no voice.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys

import numpy as np
import pytest

from tests.helpers import ROOT, shared

_loader = importlib.machinery.SourceFileLoader("simulate_conversations", str(ROOT / "scripts" / "simulate_conversations"))
_spec = importlib.util.spec_from_loader("simulate_conversations", _loader)
sim = importlib.util.module_from_spec(_spec)
sys.modules["simulate_conversations"] = sim  # dataclasses look their module up there
_loader.exec_module(sim)

SR = sim.SR


def synthetic_voice(name: str, f0: float, seed: int, seconds: float = 9.0) -> "sim.Voice":
    """Syllables of 0.15-0.4 s on a harmonic series, pauses of 0.05-0.7 s, a -75 dB floor."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(seconds * SR)).astype(np.float32) * 10 ** (-75 / 20)
    t = 0.2
    while t < seconds - 0.6:
        length = rng.uniform(0.15, 0.4)
        n = int(length * SR)
        time = np.arange(n) / SR
        tone = sum(np.sin(2 * np.pi * f0 * k * time) / k for k in range(1, 6))
        start = int(t * SR)
        x[start : start + n] += (0.1 * tone * np.hanning(n)).astype(np.float32)
        t += length + rng.uniform(0.05, 0.7)
    return sim.Voice(name, x[: int(6.5 * SR)], x[int(6.5 * SR) :])


VOICES = [synthetic_voice(f"V{i}", 110 + 37 * i, i) for i in range(5)]


def segments_of(conv, speaker):
    return [(a, b) for a, b, s in conv.segments if s == speaker]


def covered(segments, length_frames):
    mask = np.zeros(length_frames, dtype=bool)
    for a, b in segments:
        mask[int(round(a * SR)) // sim.FRAME : int(round(b * SR)) // sim.FRAME] = True
    return mask


@pytest.fixture(scope="module", params=[(2, False, 1), (3, True, 2), (5, True, 3), (4, False, 4)])
def conversation(request):
    n, noisy, seed = request.param
    return sim.simulate(f"c{seed}", VOICES[:n], 60.0, noisy, seed)


def test_mix_is_the_sum_of_its_parts(conversation):
    total = np.sum(list(conversation.wet.values()), axis=0) + conversation.noise
    assert np.allclose(total, conversation.mix, atol=1e-5)
    assert np.max(np.abs(conversation.mix)) <= 0.95 + 1e-6


def test_reference_holds_exactly_the_speech_of_each_dry_track(conversation):
    """Loud frames of a speaker's dry track lie inside their segments; every segment starts and ends on speech."""
    for voice in VOICES[: len(conversation.dry)]:
        dry = conversation.dry[voice.speaker]
        levels = sim.frame_levels(dry)
        loud = np.percentile(sim.frame_levels(voice.material), 95)
        threshold = max(loud - 40.0, np.percentile(sim.frame_levels(voice.material), 10) + 8.0)
        mine = segments_of(conversation, voice.speaker)
        assert mine, f"{voice.speaker} never speaks"
        inside = covered(mine, len(levels))
        # Outside the reference: nothing louder than the source's own pauses (one frame of slack at each edge).
        slack = inside | np.roll(inside, 1) | np.roll(inside, -1)
        assert not np.any((levels > threshold) & ~slack), f"{voice.speaker} speaks outside the reference"
        silent_outside = levels[~slack & (levels > -200)]
        assert silent_outside.size == 0 or silent_outside.max() <= threshold
        for a, b in mine:
            first, last = int(round(a * SR)) // sim.FRAME, int(round(b * SR)) // sim.FRAME
            assert levels[first : first + 2].max() > threshold, f"segment at {a:.2f} s starts in silence"
            assert levels[max(first, last - 2) : last].max() > threshold, f"segment ending {b:.2f} s ends in silence"
            assert b - a >= sim.MIN_SEGMENT_S - 1e-3


def test_turn_taking_overlaps_levels_and_talk_time(conversation):
    speakers = sorted(conversation.dry)
    frames = len(conversation.mix) // sim.FRAME
    masks = {s: covered(segments_of(conversation, s), frames) for s in speakers}
    depth = np.sum(list(masks.values()), axis=0)
    # Overlapped stretches (two or more voices at once) are at most 2 s long.
    for a, b in sim.runs(depth >= 2):
        assert (b - a) * sim.FRAME / SR <= 2.0 + 0.02
    assert abs(sim.overlap_seconds(conversation.segments) - np.sum(depth >= 2) * sim.FRAME / SR) < 0.05
    assert all(-10 <= g <= 10 for g in conversation.gains_db.values())
    talk = {s: masks[s].sum() for s in speakers}
    share = min(talk.values()) / sum(talk.values())
    if len(speakers) >= 3:
        assert share < 0.05, "with three or more speakers one says under 5%"
    # Gaps between speech stay under 2.5 s (plus the rare speaker's 0.2 s lead-in on either side).
    for a, b in sim.runs(depth == 0)[1:-1]:
        assert (b - a) * sim.FRAME / SR <= 2.5 + 0.45


def test_noise_level_is_the_snr_asked_for(conversation):
    if conversation.snr_db is None:
        assert not np.any(conversation.noise)
        return
    speech = np.sum(list(conversation.wet.values()), axis=0)
    frames = len(speech) // sim.FRAME
    active = np.any([covered(segments_of(conversation, s), frames) for s in conversation.dry], axis=0)
    snr = 20 * np.log10(sim.speech_rms(speech, active) / np.sqrt(np.mean(conversation.noise.astype(np.float64) ** 2)))
    assert abs(snr - conversation.snr_db) < 0.1
    assert 5 <= conversation.snr_db <= 30 and 0.2 <= conversation.rt60_s <= 0.8


def test_seeded():
    a = sim.simulate("x", VOICES[:3], 30.0, True, 7)
    b = sim.simulate("x", VOICES[:3], 30.0, True, 7)
    c = sim.simulate("x", VOICES[:3], 30.0, True, 8)
    assert a.segments == b.segments and np.array_equal(a.mix, b.mix)
    assert a.segments != c.segments


def test_rttm_lines_round_trip():
    conv = sim.simulate("rt", VOICES[:2], 20.0, False, 5)
    lines = sim.rttm_lines("rt", conv.segments).splitlines()
    assert len(lines) == len(conv.segments)
    for line, (a, b, s) in zip(lines, conv.segments):
        f = line.split()
        assert f[0] == "SPEAKER" and f[1] == "rt" and f[7] == s
        assert abs(float(f[3]) - a) < 1e-3 and abs(float(f[3]) + float(f[4]) - b) < 2e-3


def test_plan_has_every_count_in_both_conditions_and_halves_share_no_voice():
    plan = sim.plan(64, 60.0, 120.0, 19)
    for half in ("tuning", "test"):
        items = [p for p in plan if p["half"] == half]
        assert len(items) == 32
        for n in range(2, 9):
            assert {p["noisy"] for p in items if p["speakers"] == n} == {False, True}
        assert all(60.0 <= p["duration"] <= 120.0 for p in items)
    pool = shared("speakers/librispeech_train_clean_100/speakers.tsv").parent.parent
    halves = sim.load_voices(pool, 19)
    tuning, test = {v.speaker for v in halves["tuning"]}, {v.speaker for v in halves["test"]}
    assert not tuning & test and len(tuning) + len(test) == 153  # 151 LibriSpeech utterances of 8 s or more, 2 ARCTIC voices
