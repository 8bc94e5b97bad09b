"""Speaker-turn edges extended over the sound that adjoins them.

pyannote's segmentation marks voiced speech. The breath before a sentence, a soft onset
and a trailing sound fall outside its turns, although they belong to the person speaking
and annotations (by hand or by energy) include them; on the LibriSpeech mixes that was
most of the missed speech (README, "Diarization"). Here each turn edge that borders no
speech is moved outward over frames that stand out from the recording's own background
(learnt where nobody speaks), up to a limit, and never into another speaker's turn.
Silent pauses are left as they are.

Pure numpy, so it is unit-tested without torch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from engines.diarization.speakers import SpeakerTurn, runs

FRAME_S = 0.02
BLOCK_FRAMES = 3000  # one minute
DIGITAL_SILENCE_DB = -90.0  # frames this quiet are padding, not the recording's background
MIN_BACKGROUND_FRAMES = 50  # one second of frames where nobody speaks, to learn the background from
MAD_TO_SIGMA = 1.4826  # a normal distribution's standard deviation is 1.4826 times its median absolute deviation


def frame_levels(samples: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """Level in dB (full scale) of each 20 ms frame."""
    hop = round(FRAME_S * sample_rate)
    count = len(samples) // hop
    levels = np.empty(count)
    for first in range(0, count, BLOCK_FRAMES):  # in blocks: a float64 copy of two hours would take 900 MB
        last = min(first + BLOCK_FRAMES, count)
        frames = np.asarray(samples[first * hop : last * hop], dtype=np.float64).reshape(last - first, hop)
        levels[first:last] = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    return levels


def loud_frames(samples: np.ndarray, speech: Sequence[SpeakerTurn] = (), sample_rate: int = 16000,
                floor_margin_db: float | None = 10.0, background_sigmas: float | None = 4.0, guard_s: float = 0.3,
                min_margin_db: float = 1.0, bridge_frames: int = 2) -> np.ndarray:
    """Per 20 ms frame: is it sound, rather than the recording's background?

    A frame is sound when it passes either of two tests:
    - it is `floor_margin_db` above the recording's floor, the 5th percentile of its frame
      levels (digital silence, i.e. zero padding, left out);
    - it stands out from the background, learnt from the frames where no speaker talks
      (`speech`, the diarization's turns, kept `guard_s` away from each): more than
      `background_sigmas` robust standard deviations (from the median absolute deviation,
      which the odd unmarked breath or click does not move) above their median, and at
      least `min_margin_db`. This needs a second of such frames.
    None switches a test off. A steady studio floor (±0.4 dB) passes the second test 2-3 dB
    above it, so the quiet ends of words and the room tone of a take count; under a background
    that rises and falls by several dB the second test grows strict and the first still holds.
    Dips of up to `bridge_frames` quiet frames between loud ones count as loud: a fading
    sound flickers around any threshold.
    """
    levels = frame_levels(samples, sample_rate)
    recorded = levels > DIGITAL_SILENCE_DB
    if not recorded.any():
        return np.zeros(levels.size, dtype=bool)
    threshold = np.inf if floor_margin_db is None else np.percentile(levels[recorded], 5) + floor_margin_db
    background = recorded.copy()
    guard = round(guard_s / FRAME_S)
    for turn in speech:
        background[max(0, int(turn.start / FRAME_S) - guard) : int(np.ceil(turn.end / FRAME_S)) + guard] = False
    if background_sigmas is not None and background.sum() >= MIN_BACKGROUND_FRAMES:
        quiet = levels[background]
        median = np.median(quiet)
        sigma = MAD_TO_SIGMA * np.median(np.abs(quiet - median))
        threshold = min(threshold, median + max(background_sigmas * sigma, min_margin_db))
    loud = levels >= threshold
    for a, b in runs(~loud):
        if 0 < a and b < loud.size and b - a <= bridge_frames:
            loud[a:b] = True
    return loud


def extend_turn_edges(turns: list[SpeakerTurn], loud: np.ndarray, max_s: float) -> list[SpeakerTurn]:
    """Move turn edges outward over loud frames, at most `max_s`, only into time no turn covers.

    Where the turns on both sides of a gap reach each other, a gap between one speaker's
    turns closes, and between two speakers they meet halfway. Touching turns of one speaker
    are merged. Works the same for exclusive turns and for turns that overlap.
    """
    if not turns or max_s <= 0 or loud.size == 0:
        return list(turns)
    turns = sorted(turns, key=lambda t: (t.start, t.end))
    limit = round(max_s / FRAME_S)
    end_of_audio = loud.size * FRAME_S

    def reach_forward(t: float, stop: float) -> float:
        frame = int(np.ceil(t / FRAME_S - 1e-6))
        last = min(frame + limit, int(stop / FRAME_S), loud.size)
        while frame < last and loud[frame]:
            frame += 1
        return max(t, min(frame * FRAME_S, stop))

    def reach_backward(t: float, stop: float) -> float:
        frame = min(int(np.floor(t / FRAME_S + 1e-6)), loud.size)  # a turn may end past the last whole frame
        first = max(frame - limit, int(np.ceil(stop / FRAME_S)), 0)
        while frame > first and loud[frame - 1]:
            frame -= 1
        return min(t, max(frame * FRAME_S, stop))

    # Covered time, as merged intervals; extension happens only in the gaps between them.
    covered: list[list[float]] = []
    for t in turns:
        if covered and t.start <= covered[-1][1]:
            covered[-1][1] = max(covered[-1][1], t.end)
        else:
            covered.append([t.start, t.end])

    ending_at: dict[float, list[int]] = {}  # the gaps' edges are exactly these turn edges
    starting_at: dict[float, list[int]] = {}
    for i, t in enumerate(turns):
        ending_at.setdefault(t.end, []).append(i)
        starting_at.setdefault(t.start, []).append(i)
    new_start = {i: t.start for i, t in enumerate(turns)}
    new_end = {i: t.end for i, t in enumerate(turns)}
    for k in range(len(covered) + 1):
        gap_start = covered[k - 1][1] if k > 0 else 0.0
        gap_end = covered[k][0] if k < len(covered) else end_of_audio
        if gap_end <= gap_start:
            continue
        left = ending_at.get(gap_start, []) if k > 0 else []
        right = starting_at.get(gap_end, []) if k < len(covered) else []
        forward = reach_forward(gap_start, gap_end) if left else gap_start
        backward = reach_backward(gap_end, gap_start) if right else gap_end
        shared: set[str] = set()
        if left and right and forward >= backward:  # sound all the way across the gap
            shared = {turns[i].speaker for i in left} & {turns[i].speaker for i in right}
            forward = backward = (gap_start + gap_end) / 2
        for i in left:  # a pause between two turns of one voice becomes part of their turn
            new_end[i] = gap_end if turns[i].speaker in shared else forward
        for i in right:
            new_start[i] = gap_start if turns[i].speaker in shared else backward
    extended = [replace(t, start=round(new_start[i], 3), end=round(new_end[i], 3)) for i, t in enumerate(turns)]
    return _merge_touching(extended)


def _merge_touching(turns: list[SpeakerTurn]) -> list[SpeakerTurn]:
    merged: list[SpeakerTurn] = []
    last_of: dict[str, int] = {}
    for t in sorted(turns, key=lambda t: (t.start, t.end)):
        i = last_of.get(t.speaker)
        if i is not None and t.start <= merged[i].end + 1e-6:
            merged[i] = replace(merged[i], end=max(merged[i].end, t.end))
        else:
            last_of[t.speaker] = len(merged)
            merged.append(t)
    return sorted(merged, key=lambda t: (t.start, t.end))
