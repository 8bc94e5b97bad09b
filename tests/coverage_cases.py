"""Recordings built from real speech in ../shared/data/en_asr, with every clip's place known, for the
coverage guarantee (engines/coverage.py): the tests and scripts/eval_coverage use the same cases.

Each case is clips of different speakers with pauses of low noise between them (pure digital silence
makes Whisper behave unlike any microphone). `covered_clips` says which clips a transcript's segments
cover: a clip counts as covered when the segments over its stretch hold most of its words.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.helpers import SHARED, normalize

RATE = 16_000
EN_ASR = SHARED / "en_asr"

# name -> clips (file under en_asr/) and pauses (seconds), in order.
CASES: dict[str, list[str | float]] = {
    # Utterances separated by 5-10 s pauses; the last one falls in the last 8 s of a 30 s window and,
    # without VAD, the decoder ends there (measured: the last 14 s, 7.6 s of speech, came out empty).
    "pauses": ["audio/ps_librivox_0870.wav", 7.0, "audio/jfk.flac", 6.0, "audio/mfa_long.flac", 8.0,
               "audio/ps_librivox_0890.wav", 9.0, "audio/mfa_crossword.flac", 5.0, "audio/mfa_words.flac"],
}


@dataclass(frozen=True)
class Placed:
    file: str
    start: float
    end: float
    reference: str


def references() -> dict[str, str]:
    with open(EN_ASR / "references.tsv", newline="", encoding="utf-8") as fh:
        return {row["file"]: row["transcript_plain"] for row in csv.DictReader(fh, delimiter="\t")}


def build(name: str, seed: int = 0) -> tuple[np.ndarray, list[Placed]]:
    """The case's samples (16 kHz mono float32) and where each clip sits."""
    from engines.audio import decode_audio

    refs = references()
    rng = np.random.default_rng(seed)
    pieces, placed, pos = [], [], 0
    for part in CASES[name]:
        if isinstance(part, float):
            x = rng.normal(0, 3e-4, int(part * RATE)).astype(np.float32)
        else:
            x = decode_audio(str(Path(EN_ASR) / part)).samples
            x = x / (np.abs(x).max() + 1e-9) * 0.5  # even loudness
            placed.append(Placed(part, pos / RATE, (pos + len(x)) / RATE, refs[part]))
        pieces.append(x.astype(np.float32))
        pos += len(x)
    return np.concatenate(pieces), placed


def clip_coverage(clip: Placed, spans: list[tuple[float, float]], text_in_clip: str) -> tuple[float, float]:
    """(seconds of the clip inside segment spans / clip length, reference words found / reference words)."""
    inside = sum(max(0.0, min(b, clip.end) - max(a, clip.start)) for a, b in spans)
    ref = normalize(clip.reference).split()
    hyp = set(normalize(text_in_clip).split())
    return inside / (clip.end - clip.start), sum(w in hyp for w in ref) / max(1, len(ref))


def missing_clips(placed: list[Placed], segments: list[dict]) -> list[str]:
    """Clips whose stretch no segment covers: under half their reference words in the text of the
    segments overlapping them (clips may hold long pauses, so their length is no measure)."""
    spans = [(s["start"], s["end"]) for s in segments]
    missing = []
    for clip in placed:
        text = " ".join(s["text"] for s in segments if s["end"] > clip.start and s["start"] < clip.end)
        time_share, word_share = clip_coverage(clip, spans, text)
        if word_share < 0.5:
            missing.append(f"{clip.file} at {clip.start:.1f}-{clip.end:.1f} s (time {time_share:.0%}, words {word_share:.0%})")
    return missing


def missing_seconds(placed: list[Placed], segments: list[dict]) -> float:
    """Seconds of clip audio outside every segment span."""
    spans = sorted((s["start"], s["end"]) for s in segments)
    total = 0.0
    for clip in placed:
        inside = sum(max(0.0, min(b, clip.end) - max(a, clip.start)) for a, b in spans)
        total += (clip.end - clip.start) - inside
    return total
