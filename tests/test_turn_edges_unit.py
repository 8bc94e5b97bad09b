"""Turn edges grown over adjoining sound (engines/diarization/turn_edges.py), on synthetic signals (no models)."""

from __future__ import annotations

import numpy as np

from engines.diarization.speakers import SpeakerTurn
from engines.diarization.turn_edges import FRAME_S, extend_turn_edges, loud_frames

RATE = 16000


def _signal(parts: list[tuple[float, float, float]], seconds: float, floor_db: float = -65.0) -> np.ndarray:
    """White noise at `floor_db`, with (start, end, level dB) stretches of louder noise."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(int(seconds * RATE)) * 10 ** (floor_db / 20)
    for start, end, level in parts:
        a, b = int(start * RATE), int(end * RATE)
        x[a:b] = rng.standard_normal(b - a) * 10 ** (level / 20)
    return x.astype(np.float32)


def _frame(t: float) -> int:
    return round(t / FRAME_S)


def _everywhere(seconds: float) -> list[SpeakerTurn]:
    """Speech over the whole recording: no background to learn from, so only the floor test applies."""
    return [SpeakerTurn(0.0, seconds, "A")]


def test_floor_test_follows_the_recordings_own_floor_and_bridges_short_dips():
    x = _signal([(0.5, 1.0, -50), (1.0, 2.0, -25), (2.0, 2.04, -65), (2.04, 2.5, -45)], 4.0)
    loud = loud_frames(x, speech=_everywhere(4.0))
    assert not loud[: _frame(0.5)].any() and not loud[_frame(2.5) :].any()
    assert loud[_frame(0.5) : _frame(2.5)].all()  # the 40 ms dip at 2.0 s is bridged
    # In a noisy room the same -50 dB sound is no longer 10 dB above the floor.
    noisy = _signal([(0.5, 1.0, -50), (1.0, 2.0, -25)], 4.0, floor_db=-52)
    assert not loud_frames(noisy, speech=_everywhere(4.0))[_frame(0.55) : _frame(0.95)].any()


def test_digital_silence_does_not_set_the_floor():
    x = _signal([(1.0, 2.0, -25)], 3.0, floor_db=-60)
    x[: RATE // 2] = 0.0  # zero padding at the start
    loud = loud_frames(x, speech=_everywhere(3.0))
    assert not loud[_frame(0.6) : _frame(0.95)].any()
    assert loud[_frame(1.05) : _frame(1.95)].all()
    # Nor the background: zeros outside the speech do not make every recorded frame stand out.
    loud = loud_frames(x, speech=[SpeakerTurn(1.0, 2.0, "A")])
    assert not loud[_frame(2.4) :].any()


def test_a_steady_background_lets_sound_just_above_it_count():
    # A studio floor at -65 dB; a soft onset and a trailing sound 4-5 dB above it, below the floor test's 10 dB.
    x = _signal([(0.7, 1.0, -60), (1.0, 2.0, -25), (2.0, 2.4, -61)], 5.0)
    speech = [SpeakerTurn(1.0, 2.0, "A")]
    loud = loud_frames(x, speech=speech)
    assert loud[_frame(0.72) : _frame(2.38)].all()
    assert not loud[: _frame(0.66)].any() and not loud[_frame(2.44) :].any()  # the background itself stays quiet
    assert not loud_frames(x, speech=_everywhere(5.0))[_frame(2.04) : _frame(2.36)].any()  # the floor test alone


def test_a_fluctuating_background_makes_the_background_test_strict():
    rng = np.random.default_rng(1)
    t = np.arange(6 * RATE) / RATE
    swing_db = 8 * np.sin(2 * np.pi * 0.7 * t)  # a background that rises and falls by 8 dB
    x = rng.standard_normal(t.size) * 10 ** ((-55 + swing_db) / 20)
    x[RATE : 2 * RATE] = rng.standard_normal(RATE) * 10 ** (-25 / 20)
    speech = [SpeakerTurn(1.0, 2.0, "A")]
    x = x.astype(np.float32)
    background_only = loud_frames(x, speech=speech, floor_margin_db=None)
    assert not background_only[_frame(2.4) :].any()  # the background's peaks are not taken for sound...
    assert loud_frames(x, speech=speech)[_frame(1.05) : _frame(1.95)].all()  # ...and the floor test still holds


def test_the_background_test_needs_a_second_of_background_and_a_minimum_margin():
    x = _signal([(0.0, 3.6, -25), (3.6, 3.8, -62)], 4.0)  # 0.2 s of background after the guard
    speech = [SpeakerTurn(0.0, 3.6, "A")]
    assert not loud_frames(x, speech=speech)[_frame(3.62) : _frame(3.78)].any()  # floor test only
    # A constant background (a tone: no spread at all) still asks for 1 dB.
    tone = (10 ** (-65 / 20) * np.sqrt(2) * np.sin(2 * np.pi * 500 * np.arange(5 * RATE) / RATE)).astype(np.float32)
    tone[2 * RATE : 3 * RATE] *= 10 ** (40 / 20)  # the speech
    tone[round(1.76 * RATE) : 2 * RATE] *= 10 ** (0.5 / 20)
    tone[3 * RATE : round(3.24 * RATE)] *= 10 ** (2 / 20)
    loud = loud_frames(tone, speech=[SpeakerTurn(2.0, 3.0, "A")])
    assert not loud[_frame(1.78) : _frame(1.98)].any() and loud[_frame(3.02) : _frame(3.22)].all()


def test_edges_grow_over_sound_up_to_the_limit():
    loud = np.zeros(_frame(5.0), dtype=bool)
    loud[_frame(0.4) : _frame(2.3)] = True
    turns = extend_turn_edges([SpeakerTurn(1.0, 2.0, "A")], loud, max_s=0.5)
    assert turns == [SpeakerTurn(0.5, 2.3, "A")]
    assert extend_turn_edges([SpeakerTurn(1.0, 2.0, "A")], loud, max_s=0.0) == [SpeakerTurn(1.0, 2.0, "A")]


def test_quiet_edges_do_not_move():
    loud = np.zeros(_frame(5.0), dtype=bool)
    loud[_frame(1.0) : _frame(2.0)] = True
    assert extend_turn_edges([SpeakerTurn(1.0, 2.0, "A")], loud, max_s=0.5) == [SpeakerTurn(1.0, 2.0, "A")]


def test_two_speakers_meet_halfway_and_one_speaker_closes_its_pause():
    loud = np.ones(_frame(6.0), dtype=bool)
    loud[: _frame(0.5)] = False
    loud[_frame(5.5) :] = False
    two = extend_turn_edges([SpeakerTurn(1.0, 2.0, "A"), SpeakerTurn(2.4, 3.0, "B")], loud, max_s=0.5)
    assert two == [SpeakerTurn(0.5, 2.2, "A"), SpeakerTurn(2.2, 3.5, "B")]
    one = extend_turn_edges([SpeakerTurn(1.0, 2.0, "A"), SpeakerTurn(2.4, 3.0, "A")], loud, max_s=0.5)
    assert one == [SpeakerTurn(0.5, 3.5, "A")]
    # Too far apart to reach each other: each grows by the limit and the gap stays.
    apart = extend_turn_edges([SpeakerTurn(1.0, 2.0, "A"), SpeakerTurn(4.0, 4.5, "A")], loud, max_s=0.5)
    assert apart == [SpeakerTurn(0.5, 2.5, "A"), SpeakerTurn(3.5, 5.0, "A")]


def test_turns_never_grow_into_other_turns_and_overlaps_are_kept():
    loud = np.ones(_frame(4.0), dtype=bool)
    turns = [SpeakerTurn(1.0, 2.0, "A"), SpeakerTurn(1.5, 2.5, "B"), SpeakerTurn(2.5, 3.0, "A")]
    extended = extend_turn_edges(turns, loud, max_s=0.3)
    assert extended == [SpeakerTurn(0.7, 2.0, "A"), SpeakerTurn(1.5, 2.5, "B"), SpeakerTurn(2.5, 3.3, "A")]
    exclusive = [SpeakerTurn(1.0, 2.0, "A"), SpeakerTurn(2.0, 3.0, "B")]
    extended = extend_turn_edges(exclusive, loud, max_s=0.3)
    assert extended == [SpeakerTurn(0.7, 2.0, "A"), SpeakerTurn(2.0, 3.3, "B")]
    assert all(a.end <= b.start for a, b in zip(extended, extended[1:]))


def test_levels_are_the_same_across_block_boundaries():
    x = _signal([(10.0, 70.0, -25), (59.9, 60.1, -65)], 130.0)
    loud = loud_frames(x)
    assert loud.size == _frame(130.0)
    assert loud[_frame(10.0) : _frame(59.9)].all() and loud[_frame(60.1) : _frame(70.0)].all()
    assert not loud[_frame(59.94) : _frame(60.06)].any()  # 200 ms of quiet across the 60 s block edge
    assert not loud[: _frame(10.0)].any() and not loud[_frame(70.0) :].any()


def test_turns_that_run_past_the_last_frame_do_not_break_it():
    """pyannote's last turn can end after the last whole 20 ms frame (seen on an AMI excerpt)."""
    loud = np.ones(_frame(30.0), dtype=bool)
    turns = [SpeakerTurn(10.0, 20.0, "A"), SpeakerTurn(30.62, 30.9, "B")]
    grown = extend_turn_edges(turns, loud, max_s=0.5)
    assert grown[0] == SpeakerTurn(9.5, 20.5, "A")
    assert grown[1].speaker == "B" and grown[1].end == 30.9 and 29.5 <= grown[1].start < 30.62
