"""faster-whisper's BatchedInferencePipeline with what sequential decoding would have recovered put back.

The pipeline decodes many chunks (each up to 30 s) in one batched CTranslate2 call, each
once, at the first temperature only. Two things are lost against `WhisperModel.transcribe`:

- the temperature fallback: a chunk that comes out as a repetition loop (compression ratio
  over 2.4) or with a low average log probability (below -1, unless it is probably silence)
  is kept as it is;
- the continuation: when the model ends its text before the end of the chunk (it often
  stops after the first sentence of a chunk that holds several), the rest of the chunk is
  dropped, where the sequential decoder would go on from the last timestamp.

Here the chunks are planned first (Silero VAD, speech merged into spans of at most 30 s on
the file's timeline) and given to the pipeline as clips, so each output segment can be
traced to its chunk. A failed chunk is decoded again by the sequential decoder at the rest
of the temperature ladder; a chunk whose text ends more than `TAIL_S` before its end gets
its remainder decoded sequentially. Their segments take the place of (or follow) the
batched ones.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections.abc import Iterable, Iterator

import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.transcribe import Segment as FwSegment
from faster_whisper.vad import VadOptions, get_speech_timestamps

from engines.types import SAMPLE_RATE

log = logging.getLogger("oyez.batched")

COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
CHUNK_S = 30.0
TAIL_S = 2.0  # undecoded speech at the end of a chunk longer than this is decoded sequentially


def transcribe_batched(
    model: WhisperModel,
    samples: np.ndarray,
    *,
    batch_size: int,
    temperatures: list[float],
    vad: VadOptions | None,
    **kwargs,
):
    """Like `WhisperModel.transcribe`, with the chunks decoded `batch_size` at a time. Returns (segments, info)."""
    chunks = plan_chunks(samples, vad)
    if not chunks:  # no speech at all: the sequential decoder answers that (no segments) with the language
        return model.transcribe(samples, temperature=temperatures, vad_filter=True, vad_parameters=vad, **kwargs)
    segments, info = BatchedInferencePipeline(model).transcribe(
        samples,
        batch_size=batch_size,
        temperature=temperatures[:1],
        vad_filter=False,
        clip_timestamps=[{"start": a, "end": b} for a, b in chunks],
        without_timestamps=False,
        **kwargs,
    )
    retry = dict(kwargs, language=info.language, temperature=list(temperatures), vad_filter=vad is not None,
                 vad_parameters=vad)
    return recover(model, samples, segments, chunks, retry, len(temperatures) > 1), info


def plan_chunks(samples: np.ndarray, vad: VadOptions | None) -> list[tuple[float, float]]:
    """[start, end) seconds of each chunk: speech runs merged into spans of at most CHUNK_S (all audio without VAD)."""
    duration = len(samples) / SAMPLE_RATE
    if vad is None:
        return [(s, min(s + CHUNK_S, duration)) for s in np.arange(0.0, duration, CHUNK_S).tolist()]
    vad = dataclasses.replace(vad, max_speech_duration_s=min(vad.max_speech_duration_s, CHUNK_S))
    spans: list[list[float]] = []
    for ts in get_speech_timestamps(samples, vad):
        start, end = ts["start"] / SAMPLE_RATE, ts["end"] / SAMPLE_RATE
        if spans and end - spans[-1][0] <= CHUNK_S:
            spans[-1][1] = end
        else:
            spans.append([start, end])
    return [(a, b) for a, b in spans]


def recover(model: WhisperModel, samples: np.ndarray, segments: Iterable[FwSegment],
            chunks: list[tuple[float, float]], retry: dict, fallback: bool) -> Iterator[FwSegment]:
    """Pass good chunks through; decode failed chunks again, and the undecoded ends of chunks."""
    # The pipeline marks each segment with its chunk's start, in frames of 10 ms, as `seek`.
    spans = {int(int(a * SAMPLE_RATE) / SAMPLE_RATE * model.frames_per_second): (a, b) for a, b in chunks}
    for chunk in _by_chunk(segments):
        seek = chunk[0].seek
        start, end = spans.get(seek, (chunk[0].start, chunk[-1].end))
        if fallback and needs_fallback(chunk):
            log.info("chunk %.1f-%.1f s failed the thresholds at temperature 0; decoding it again", start, end)
            again = dict(retry, temperature=retry["temperature"][1:])
            yield from _sequential(model, samples, start - 0.2, end + 0.2, seek, again)
            continue
        yield from chunk
        if end - chunk[-1].end > TAIL_S:
            log.info("chunk text ends at %.1f s, its audio at %.1f s; decoding the rest", chunk[-1].end, end)
            yield from _sequential(model, samples, chunk[-1].end, end + 0.2, seek, retry)


def _sequential(model: WhisperModel, samples: np.ndarray, start: float, end: float, seek: int,
                kwargs: dict) -> Iterator[FwSegment]:
    """Decode samples[start:end] (seconds) sequentially; times on the file's timeline."""
    a = max(0, int(start * SAMPLE_RATE))
    b = min(len(samples), int(end * SAMPLE_RATE))
    again, _ = model.transcribe(samples[a:b], **kwargs)
    offset = a / SAMPLE_RATE
    for seg in again:
        words = [dataclasses.replace(w, start=w.start + offset, end=w.end + offset) for w in seg.words] if seg.words else seg.words
        yield dataclasses.replace(seg, start=seg.start + offset, end=seg.end + offset, seek=seek, words=words)


def needs_fallback(chunk: list[FwSegment]) -> bool:
    """Whisper's rule: too repetitive, or too unsure unless it is probably silence."""
    text = "".join(s.text for s in chunk)
    if text and compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD:
        return True
    first = chunk[0]
    return first.avg_logprob < LOG_PROB_THRESHOLD and first.no_speech_prob <= NO_SPEECH_THRESHOLD


def compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw))


def _by_chunk(segments: Iterable[FwSegment]) -> Iterator[list[FwSegment]]:
    """Group consecutive segments of one batched chunk: they share the chunk's `seek`."""
    group: list[FwSegment] = []
    for seg in segments:
        if group and seg.seek != group[0].seek:
            yield group
            group = []
        group.append(seg)
    if group:
        yield group
