"""Long audio in bounded windows: where to cut a long signal so each piece is transcribed on its own.

faster-whisper computes the log-mel features of everything it is given at once (an STFT of
two hours is several GB) and VAD-filtering copies the speech out again. Cutting the signal
into windows of about `window_seconds`, each a view of the decoded array (no copy), keeps
that working memory to one window's worth whatever the file's length. Cuts fall at the
quietest moment near each boundary, so a word is rarely split between two windows.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from functools import lru_cache

import numpy as np

FRAME_S = 0.1  # energy is compared over 100 ms frames
SEARCH_S = 30.0  # the cut is searched for in the last 30 s before each nominal boundary


def plan_windows(samples: np.ndarray, rate: int, window_seconds: float) -> list[tuple[int, int]]:
    """[start, end) sample ranges covering the signal, each at most about `window_seconds` long.

    Audio no longer than 1.25 windows stays one piece. Otherwise the signal is split into
    n = ceil(duration / window_seconds) pieces of equal nominal length, and each cut moves to
    the quietest 100 ms frame in the `SEARCH_S` seconds before its nominal place.
    """
    total = len(samples)
    if window_seconds <= 0 or total <= 1.25 * window_seconds * rate:
        return [(0, total)]
    count = math.ceil(total / (window_seconds * rate))
    nominal = total / count
    frame = max(1, int(FRAME_S * rate))
    cuts = [0]
    for k in range(1, count):
        target = int(round(k * nominal))
        low = max(cuts[-1] + frame, target - int(min(SEARCH_S, window_seconds / 4) * rate))
        cuts.append(quietest_point(samples, low, target, frame))
    cuts.append(total)
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


FIRST_PIECE_S = (3.0, 8.0)  # an early first window ends at the quietest moment in this range


def split_first(samples: np.ndarray, rate: int, windows: list[tuple[int, int]],
                piece: tuple[float, float] = FIRST_PIECE_S) -> list[tuple[int, int]]:
    """`windows` with the first few seconds of the first one cut off as a window of their own.

    Whisper's encoder costs the same for 1 s as for 30 s, but the decoder yields nothing of a
    window until the whole window is decoded, so a stream's first text waits for ~30 s of
    tokens. A short first window (cut at the quietest 100 ms between `piece` seconds, so a word
    is rarely split) gets its text out after one encoder pass and a few tokens, for the price
    of one more encoder pass over the file. Windows too short to gain from it are left alone.
    """
    a, b = windows[0]
    low, high = a + int(piece[0] * rate), a + int(piece[1] * rate)
    if b - a < 2 * int(piece[1] * rate):
        return windows
    cut = quietest_point(samples, low, high, max(1, int(FRAME_S * rate)))
    return [(a, cut), (cut, b), *windows[1:]]


def quietest_point(samples: np.ndarray, low: int, high: int, frame: int) -> int:
    """The middle of the lowest-energy frame in samples[low:high] (high when the range is too short)."""
    n = (high - low) // frame
    if n < 1:
        return high
    region = samples[low : low + n * frame].reshape(n, frame)
    energy = np.einsum("ij,ij->i", region, region)  # no squared copy of the region
    best = int(np.argmin(energy))
    return low + best * frame + frame // 2


def release_freed_memory() -> None:
    """Hand memory freed by the last window back to the system.

    Each window allocates and frees a few hundred MB of features in blocks too small to be
    memory maps; glibc keeps such freed heap memory, fragmented across its per-thread arenas,
    so resident memory crept up window after window (about 1.18 GB between windows on a
    two-hour file, measured). `malloc_trim` releases it. No-op where libc has no malloc_trim.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@lru_cache(maxsize=1)
def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - only glibc has it
        return libc
    except (OSError, AttributeError):
        return None
