"""Shared test helpers: data locations, WER, timeline checks."""

from __future__ import annotations

import csv
import io
import os
import re
import unicodedata
import wave
from pathlib import Path

import jiwer
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
# ../shared/data beside the checkout; OYEZ_SHARED_DATA points elsewhere (a git worktree's parent differs).
SHARED = Path(os.environ.get("OYEZ_SHARED_DATA") or ROOT.parent / "shared" / "data")


def shared(relative: str) -> Path:
    """A file of ../shared/data, or skip the test when that corpus is not beside the repo."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"shared data not present: {relative}")
    return path


def references() -> dict[str, str]:
    with open(DATA / "references.tsv", newline="", encoding="utf-8") as fh:
        return {row["file"]: row["transcript"] for row in csv.DictReader(fh, delimiter="\t")}


def read_tsv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s']|_", " ", text)
    text = text.replace("'", "")
    text = text.replace("mr ", "mister ")
    return " ".join(text.split())


def asr_clips(data: Path, half: str = "all") -> list[dict]:
    """The clips of ../shared/data's en_asr and multilingual_asr, split in two by row order for the evaluation
    scripts (even rows: `tune`, odd: `test`): `path`, `reference`, `language`, `half`."""
    out = []
    for subset, language_column in (("en_asr", None), ("multilingual_asr", "language")):
        for index, row in enumerate(read_tsv(data / subset / "references.tsv")):
            name = "tune" if index % 2 == 0 else "test"
            if half in (name, "all"):
                out.append({"path": data / subset / row["file"], "reference": row["transcript"],
                            "language": row[language_column] if language_column else "en", "half": name})
    return out


def server_vad_turns(samples: np.ndarray, rate: int = 16000) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """The turns a live session's server VAD (default knobs) finds in `samples`, followed by 1 s of silence so the
    last one ends: that padded audio, and (start, speech_end, end) sample indices into it, where the silence that
    ended the turn began at speech_end and the committed turn runs to end."""
    from engines.streaming_vad import StreamingVad, TurnDetector, TurnParams

    padded = np.concatenate([samples, np.zeros(rate, dtype=np.float32)])
    turns, start = [], None
    for ev in TurnDetector(TurnParams()).feed(StreamingVad()(padded)):
        if ev.kind == "start":
            start = ev.sample
        elif start is not None:
            turns.append((start, ev.speech_end if ev.speech_end is not None else ev.sample, ev.sample))
            start = None
    return padded, turns


CHARACTER_LANGUAGES = {"ja", "zh"}  # scored by characters: their text has no spaces between words


def error_rate(refs: list[str], hyps: list[str], language: str | None) -> float:
    """Corpus-level WER of normalised texts; CER (spaces ignored) for CHARACTER_LANGUAGES."""
    refs, hyps = [normalize(r) for r in refs], [normalize(h) for h in hyps]
    if language in CHARACTER_LANGUAGES:
        return jiwer.cer([r.replace(" ", "") for r in refs], [h.replace(" ", "") for h in hyps])
    return jiwer.wer(refs, hyps)


def stm_text(path: Path) -> str:
    """The words of an STM reference (speaker-segment lines: file, channel, speaker, start, end, text)."""
    return " ".join(" ".join(line.split()[5:]) for line in path.read_text().splitlines() if line.strip())


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return jiwer.wer(ref, hyp)


def assert_timeline(items, duration: float) -> None:
    """Start <= end, starts never go backwards, everything inside [0, duration]."""
    last_start = 0.0
    for item in items:
        start, end = _get(item, "start"), _get(item, "end")
        assert 0.0 <= start <= end <= duration + 1e-6, (start, end, duration)
        assert start >= last_start - 1e-6, (start, last_start)
        last_start = start


def _get(item, key):
    return item[key] if isinstance(item, dict) else getattr(item, key)


def wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


SRT_BLOCK = re.compile(r"^(\d+)\n(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)\n(.+)$")
VTT_CUE = re.compile(r"^(\d\d:\d\d:\d\d\.\d\d\d) --> (\d\d:\d\d:\d\d\.\d\d\d)\n(.+)$")


def clock(ts: str) -> float:
    h, m, rest = ts.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(rest)


def parse_srt(body: str) -> list[dict]:
    cues = []
    for block in body.strip().split("\n\n"):
        m = SRT_BLOCK.match(block.strip())
        assert m, f"not an SRT block: {block!r}"
        cues.append({"index": int(m.group(1)), "start": clock(m.group(2)), "end": clock(m.group(3)), "text": m.group(4)})
    return cues


def parse_vtt(body: str) -> list[dict]:
    assert body.startswith("WEBVTT\n"), body[:20]
    cues = []
    for block in body.split("\n\n")[1:]:
        if not block.strip():
            continue
        m = VTT_CUE.match(block.strip())
        assert m, f"not a VTT cue: {block!r}"
        cues.append({"start": clock(m.group(1)), "end": clock(m.group(2)), "text": m.group(3)})
    return cues
