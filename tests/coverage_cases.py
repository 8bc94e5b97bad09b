"""Recordings built from real speech in ../shared/data/en_asr, with every clip's place known, for the
coverage guarantee (engines/coverage.py): the tests and scripts/eval_coverage use the same cases.

Each case is clips of different speakers with pauses of low noise between them (pure digital silence
makes Whisper behave unlike any microphone). `covered_clips` says which clips a transcript's segments
cover: a clip counts as covered when segment spans hold most of its speech (Silero VAD on the clip
alone says where in the clip someone speaks).
"""

from __future__ import annotations

import csv
import difflib
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
    speech: tuple[tuple[float, float], ...]  # where in the file the clip's speech is


def references() -> dict[str, str]:
    with open(EN_ASR / "references.tsv", newline="", encoding="utf-8") as fh:
        return {row["file"]: row["transcript_plain"] for row in csv.DictReader(fh, delimiter="\t")}


def build(name: str, seed: int = 0) -> tuple[np.ndarray, list[Placed]]:
    """The case's samples (16 kHz mono float32) and where each clip sits."""
    from faster_whisper.vad import get_speech_timestamps

    from engines.audio import decode_audio
    from engines.whisper import COVERAGE_VAD

    refs = references()
    rng = np.random.default_rng(seed)
    pieces, placed, pos = [], [], 0
    for part in CASES[name]:
        if isinstance(part, float):
            x = rng.normal(0, 3e-4, int(part * RATE)).astype(np.float32)
        else:
            x = decode_audio(str(Path(EN_ASR) / part)).samples
            x = x / (np.abs(x).max() + 1e-9) * 0.5  # even loudness
            speech = tuple(((pos + t["start"]) / RATE, (pos + t["end"]) / RATE)
                           for t in get_speech_timestamps(x, COVERAGE_VAD))
            placed.append(Placed(part, pos / RATE, (pos + len(x)) / RATE, refs[part], speech))
        pieces.append(x.astype(np.float32))
        pos += len(x)
    return np.concatenate(pieces), placed


def speech_share(clip: Placed, segments: list[dict]) -> float:
    """The share of the clip's speech that lies inside segment spans."""
    total = sum(b - a for a, b in clip.speech)
    inside = sum(max(0.0, min(b, s["end"]) - max(a, s["start"])) for a, b in clip.speech for s in segments)
    return inside / total if total else 1.0


def text_recall(reference: str, text: str) -> float:
    """The share of the reference's characters found, in order, in `text` (normalised; a misheard name
    such as "Montriehal for Steleiner" for "Montreal forced aligner" still counts as heard)."""
    ref, hyp = normalize(reference), normalize(text)
    if not ref:
        return 1.0
    matched = sum(block.size for block in difflib.SequenceMatcher(None, ref, hyp, autojunk=False).get_matching_blocks())
    return matched / len(ref)


def missing_clips(placed: list[Placed], segments: list[dict], share: float = 0.6) -> list[str]:
    """Clips no segment covers: under `share` of their speech inside segment spans, and under `share`
    of their reference text in the segments that overlap them (Whisper's timestamps can be seconds off)."""
    missing = []
    for c in placed:
        time_share = speech_share(c, segments)
        text = " ".join(s["text"] for s in segments if s["end"] > c.start and s["start"] < c.end)
        recall = text_recall(c.reference, text)
        if time_share < share and recall < share:
            missing.append(f"{c.file} at {c.start:.1f}-{c.end:.1f} s ({time_share:.0%} of its speech in segments, "
                           f"{recall:.0%} of its text)")
    return missing


def missing_seconds(placed: list[Placed], segments: list[dict]) -> tuple[float, float]:
    """(seconds of clip speech outside every segment span, seconds of clip speech)."""
    total = sum(b - a for c in placed for a, b in c.speech)
    return total - sum(speech_share(c, segments) * sum(b - a for a, b in c.speech) for c in placed), total
