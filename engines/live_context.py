"""The previous turn as the context of a live turn's final decode.

A live turn decoded alone loses what the file endpoint has: the speech just before it. Given as a text prompt,
that context made Whisper `base` repeat it on short, unclear turns. Here the decode hears the previous turn too:
its audio goes before the turn (0.3 s of silence between them) and its transcript is forced as the start of the
text (Whisper's prefix, without timestamps, so the decoder goes on writing instead of closing the window), and the
words after it are the turn's. Chosen and measured with scripts/eval_live_context (docs/realtime.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.local_agreement import Word
from engines.types import SAMPLE_RATE

GAP_S = 0.3  # silence between the previous turn's audio and the turn's
WINDOW_S = 30.0  # one Whisper window: the prefix holds for the first window only, and one decode covers it


@dataclass(frozen=True)
class TurnContext:
    """A finished turn's audio (16 kHz) and the transcript sent for it."""

    samples: np.ndarray
    text: str


def previous_turn(samples: np.ndarray | None, text: str, max_seconds: float) -> TurnContext | None:
    """The context a finished turn gives the next one: none when it has no text or runs over `max_seconds`
    (its text cannot be cut to part of its audio)."""
    if samples is None or not text.strip() or not 0 < samples.size <= max_seconds * SAMPLE_RATE:
        return None
    return TurnContext(samples, " ".join(text.split()))


def in_context(context: TurnContext | None, samples: np.ndarray, prefix: str | None) -> tuple[np.ndarray, str | None, bool]:
    """The audio and forced prefix of a final decode of `samples` (prefix: the turn's words already sent), and
    whether the context is in them; the turn alone when there is no context or both would not fit one window."""
    gap = int(GAP_S * SAMPLE_RATE)
    if context is None or context.samples.size + gap + samples.size > WINDOW_S * SAMPLE_RATE:
        return samples, prefix, False
    joined = np.concatenate([context.samples, np.zeros(gap, dtype=samples.dtype), samples])
    return joined, " ".join(p for p in (context.text, prefix) if p), True


def after_context(context: TurnContext, words: list[Word]) -> list[Word] | None:
    """The words of a decode in context that follow the context's own; None if the decode does not start
    with them (it should: they were forced)."""
    expected = context.text.split()
    if [w.text for w in words[: len(expected)]] != expected:
        return None
    return words[len(expected):]
