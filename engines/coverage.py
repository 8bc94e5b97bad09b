"""The coverage guarantee: speech that no decoded segment covers is decoded again on its own.

Whisper decodes 30-second windows, and the decoder can end a window early: its last segment
ends on a timestamp well before the window's end, or it emits end-of-text, and faster-whisper
seeks past the rest (the same happens to a window it judges silent). The speech there is lost
without a trace. Here the segments are watched as they come out: whenever the gap between the
time covered so far and the next segment (or the end of the audio) is long enough to hold a
word, Silero VAD looks at that gap, and speech in it longer than `MIN_UNCOVERED_S` is decoded
again, clipped to that stretch with the text before it as the prompt, and put in its place, so
ids, seeks and timestamps stay in order. Only gaps are scanned, so the check costs a VAD pass
over the silences, whatever the request's own VAD setting.

A re-decode of silence or noise tends to come back as one of Whisper's stock hallucinations
("Thank you.", subtitle credits) or a phrase repeated; `is_hallucination` drops those, and text
that only repeats its neighbours (the words were there, their timestamps were not).

The functions here are pure: the decoder and the VAD are passed in (engines/whisper.py).
"""

from __future__ import annotations

import difflib
import logging
import re
import time
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

from engines.types import CoverageStats, Segment

log = logging.getLogger("oyez.coverage")

Span = tuple[float, float]  # [start, end) in seconds on the file's timeline

MIN_UNCOVERED_S = 1.0  # uncovered speech shorter than this is left alone (a segment's loose edge)
JOIN_S = 0.5  # speech runs closer than this count as one stretch
PAD_S = 0.2  # audio kept either side of a stretch when it is decoded again (inside the gap)
COMPRESSION_RATIO_THRESHOLD = 2.4  # Whisper's own repetition rule

# Whisper's stock output on silence, music and noise (learned from subtitled video), normalised.
SILENCE_PHRASES = frozenset({
    "you", "thank you", "thank you very much", "thanks", "thanks for watching", "thank you for watching",
    "thanks for watching and ill see you next time", "thank you for watching and ill see you next time",
    "please subscribe", "subscribe", "like and subscribe", "please like and subscribe", "bye", "bye bye",
    "goodbye", "hmm", "music", "applause", "laughter",
    "silence", "the end", "see you next time", "see you in the next video", "ill see you in the next video",
    "thank you so much for watching", "thanks for listening", "thank you for listening",
})
SILENCE_PATTERNS = re.compile(
    r"subtitles? (by|made by|created by)|captions? by|transcri(bed|ption) by|translated by|amara\s*org"
    r"|www\.|https?:|\.com\b|copyright|all rights reserved|subscribe to"
)


def subtract(speech: Iterable[Span], covered: Iterable[Span]) -> list[Span]:
    """The parts of `speech` outside every `covered` span (both sorted or not; result sorted)."""
    cover = merge(covered, 0.0)
    out: list[Span] = []
    for a, b in sorted(speech):
        for c, d in cover:
            if d <= a or c >= b:
                continue
            if c > a:
                out.append((a, c))
            a = max(a, d)
            if a >= b:
                break
        if a < b:
            out.append((a, b))
    return out


def merge(spans: Iterable[Span], join: float) -> list[Span]:
    """Sorted spans with those closer than `join` seconds merged into one."""
    out: list[list[float]] = []
    for a, b in sorted(spans):
        if b <= a:
            continue
        if out and a - out[-1][1] < join:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def uncovered_speech(speech: Iterable[Span], covered: Iterable[Span], *, min_length: float = MIN_UNCOVERED_S,
                     join: float = JOIN_S) -> list[Span]:
    """Stretches of `speech` that no `covered` span touches, at least `min_length` s long.

    Runs of uncovered speech closer than `join` seconds form one stretch (a pause between two
    words is not a reason to decode them apart).
    """
    return [(a, b) for a, b in merge(subtract(speech, covered), join) if b - a >= min_length]


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s]|_", " ", text.replace("'", "").replace("’", ""))
    return " ".join(text.split())


def compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def is_repetition(words: list[str]) -> bool:
    """One phrase said over and over (at least twice, nothing else), e.g. "I'm sorry. I'm sorry."."""
    n = len(words)
    for size in range(1, n // 2 + 1):
        if n % size == 0 and words[:size] * (n // size) == words:
            return True
    return False


def is_loop(text: str, min_words: int = 4, min_repeats: int = 3) -> bool:
    """One phrase said at least `min_repeats` times and nothing else, the last time maybe cut short (even inside a
    word), in at least `min_words` words ("I'm sorry, I'm sorry, I'm sorry, I"): a decoder loop stopped by a token
    budget. "No, no, no." (three words) is speech."""
    words = normalize(text).split()
    n = len(words)
    if n < min_words:
        return False
    for size in range(1, n // min_repeats + 1):
        expected = (words[:size] * (n // size + 1))[:n]
        if words[:-1] == expected[:-1] and expected[-1].startswith(words[-1]):
            return True
    return False


def is_hallucination(text: str, before: str = "", after: str = "") -> bool:
    """Whether a re-decoded stretch's text should be dropped rather than merged.

    Empty text, a stock silence phrase or subtitle credit, one phrase repeated, text Whisper's
    own rule calls repetitive, or text that mostly repeats the segment just before or after it (most
    of its words in the same order: the prompt talked the decoder into saying it again, or the words
    were there and only their timestamps were not).
    """
    norm = normalize(text)
    if not norm:
        return True
    if norm in SILENCE_PHRASES or SILENCE_PATTERNS.search(text.lower()) or SILENCE_PATTERNS.search(norm):
        return True
    words = norm.split()
    if len(words) > 1 and is_repetition(words):
        return True
    if compression_ratio(text.strip()) > COMPRESSION_RATIO_THRESHOLD:
        return True
    return any(overlap(words, normalize(ctx).split()) >= REPEAT_SHARE for ctx in (before, after) if ctx)


REPEAT_SHARE = 0.6  # a re-decode with this share of its words found, in order, in a neighbour repeats it


def overlap(words: list[str], context: list[str]) -> float:
    """The share of `words` found in `context` in the same order (difflib's matching blocks)."""
    if not words:
        return 0.0
    matcher = difflib.SequenceMatcher(None, words, context, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks()) / len(words)


def ensure_coverage(
    segments: Iterable[Segment],
    *,
    duration: float,
    find_speech: Callable[[float, float], list[Span]],
    redecode: Callable[[float, float, str], list[Segment]],
    stats: CoverageStats,
    prompt: str = "",
    min_length: float = MIN_UNCOVERED_S,
) -> Iterator[Segment]:
    """Pass `segments` through, decoding again the speech in the gaps between them.

    `find_speech(a, b)` returns the speech spans the VAD hears in [a, b) (file seconds);
    `redecode(a, b, prompt)` decodes [a, b) on its own and returns segments on the file's
    timeline. Kept re-decodes are clamped into their gap; every segment is renumbered in
    output order, and seeks never go backwards.
    """
    cursor = 0.0  # end of the time covered so far
    index = 0
    seek = 0
    history: list[str] = [prompt] if prompt else []
    previous = ""  # text of the last segment out

    def fill(low: float, high: float, upcoming: Segment | None) -> Iterator[Segment]:
        nonlocal index, seek, previous
        if high - low < min_length:
            return
        stats.scanned_seconds += high - low
        t0 = time.perf_counter()
        speech = find_speech(low, high)
        stats.scan_wall_s += time.perf_counter() - t0
        for a, b in uncovered_speech(speech, [], min_length=min_length):
            start, end = max(low, a - PAD_S), min(high, b + PAD_S)
            context = _tail("".join(history))
            t0 = time.perf_counter()
            found = [s for s in redecode(start, end, context) if s.text.strip()]
            stats.redecode_wall_s += time.perf_counter() - t0
            text = "".join(s.text for s in found)
            if is_hallucination(text, previous, upcoming.text if upcoming else ""):
                stats.dropped += 1
                log.info("re-decoded %.1f-%.1f s: dropped by the guard (%d characters)", a, b, len(text.strip()))
                continue
            stats.redecoded += 1
            stats.redecoded_seconds += b - a
            log.info("re-decoded %.1f-%.1f s (speech no segment covered): %d characters kept", a, b, len(text.strip()))
            last_start = low
            for s in found:
                s_start = min(max(s.start, last_start), high)
                s_end = min(max(s.end, s_start), high)
                last_start = s_start
                ceiling = upcoming.seek if upcoming is not None else None
                s_seek = max(seek, round(s_start * 100)) if ceiling is None else max(seek, min(round(s_start * 100), ceiling))
                words = [replace(w, start=min(max(w.start, s_start), s_end), end=min(max(w.end, s_start), s_end))
                         for w in s.words]
                out = replace(s, id=index, seek=s_seek, start=s_start, end=s_end, words=words)
                stats.segment_ids.append(index)
                index += 1
                seek = s_seek
                history.append(out.text)
                previous = out.text
                yield out

    try:
        for segment in segments:
            yield from fill(cursor, segment.start, segment)
            out = replace(segment, id=index, seek=max(seek, segment.seek))
            index += 1
            seek = out.seek
            cursor = max(cursor, segment.end)
            history.append(segment.text)
            previous = segment.text
            yield out
        yield from fill(cursor, duration, None)
    finally:
        close = getattr(segments, "close", None)
        if close:
            close()


def _tail(text: str, chars: int = 400) -> str:
    """The end of the text so far, cut at a word boundary (Whisper keeps the last 223 prompt tokens anyway)."""
    text = text.strip()
    if len(text) <= chars:
        return text
    cut = text[-chars:]
    return cut[cut.find(" ") + 1:] if " " in cut else cut
