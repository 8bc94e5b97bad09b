"""Turn edges grown over adjoining sound (engines/turn_edges.py), on synthetic signals (no models)."""

from __future__ import annotations

import numpy as np

from engines.speakers import SpeakerTurn
from engines.turn_edges import FRAME_S, extend_turn_edges, loud_frames

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


def test_loud_frames_follow_the_recordings_own_floor_and_bridge_short_dips():
    x = _signal([(0.5, 1.0, -50), (1.0, 2.0, -25), (2.0, 2.04, -65), (2.04, 2.5, -45)], 4.0)
    loud = loud_frames(x)
    assert not loud[: _frame(0.5)].any() and not loud[_frame(2.5) :].any()
    assert loud[_frame(0.5) : _frame(2.5)].all()  # the 40 ms dip at 2.0 s is bridged
    # In a noisy room the same -50 dB sound is no longer above the floor.
    noisy = _signal([(0.5, 1.0, -50), (1.0, 2.0, -25)], 4.0, floor_db=-52)
    assert not loud_frames(noisy)[_frame(0.55) : _frame(0.95)].any()


def test_digital_silence_does_not_set_the_floor():
    x = _signal([(1.0, 2.0, -25)], 3.0, floor_db=-60)
    x[: RATE // 2] = 0.0  # zero padding at the start
    loud = loud_frames(x)
    assert not loud[_frame(0.6) : _frame(0.95)].any()
    assert loud[_frame(1.05) : _frame(1.95)].all()


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
