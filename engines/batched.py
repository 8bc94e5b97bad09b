"""faster-whisper's BatchedInferencePipeline with Whisper's temperature fallback put back.

The pipeline decodes many VAD chunks (each up to 30 s) in one batched CTranslate2 call, but
only at the first temperature: a chunk that comes out as a repetition loop (compression
ratio over 2.4) or with a low average log probability (below -1, unless the chunk is
probably silence) is kept as it is. Here each such chunk is decoded again by the sequential
decoder at the remaining temperatures of the ladder, which is what `WhisperModel.transcribe`
does for every 30-second window, and its segments replace the failed ones.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from typing import Iterable, Iterator

import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.transcribe import Segment as FwSegment
from faster_whisper.vad import VadOptions

log = logging.getLogger("oyez.batched")

SAMPLE_RATE = 16_000
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
CHUNK_S = 30


def transcribe_batched(
    model: WhisperModel,
    samples: np.ndarray,
    *,
    batch_size: int,
    temperatures: list[float],
    vad: VadOptions | None,
    **kwargs,
):
    """Like `WhisperModel.transcribe`, with the VAD chunks decoded `batch_size` at a time.

    Without VAD the whole signal is cut into 30-second clips. Returns (segments, info).
    """
    pipe = BatchedInferencePipeline(model)
    clips = None
    if vad is not None:
        # The pipeline trims chunks at 30 s; VAD must not give it longer speech runs.
        vad = dataclasses.replace(vad, max_speech_duration_s=min(vad.max_speech_duration_s, CHUNK_S))
    else:
        duration = len(samples) / SAMPLE_RATE
        clips = [{"start": s, "end": min(s + CHUNK_S, duration)} for s in range(0, int(np.ceil(duration)), CHUNK_S)]
    segments, info = pipe.transcribe(
        samples,
        batch_size=batch_size,
        temperature=temperatures[:1],
        vad_filter=vad is not None,
        vad_parameters=vad,
        clip_timestamps=clips,
        without_timestamps=False,
        **kwargs,
    )
    if len(temperatures) < 2:
        return segments, info
    retry = dict(kwargs, language=info.language, vad_filter=False, temperature=list(temperatures[1:]))
    retry.pop("log_progress", None)
    return with_fallback(model, samples, segments, retry), info


def with_fallback(model: WhisperModel, samples: np.ndarray, segments: Iterable[FwSegment], retry: dict) -> Iterator[FwSegment]:
    """Pass good chunks through; decode failed chunks again at the higher temperatures."""
    for chunk in _by_chunk(segments):
        if not needs_fallback(chunk):
            yield from chunk
            continue
        start, end = chunk[0].start, chunk[-1].end
        a = max(0, int((start - 0.2) * SAMPLE_RATE))
        b = min(len(samples), int((end + 0.2) * SAMPLE_RATE))
        log.info("chunk %.1f-%.1f s failed the thresholds at temperature 0; decoding it again", start, end)
        again, _ = model.transcribe(samples[a:b], **retry)
        offset = a / SAMPLE_RATE
        for seg in again:
            words = [dataclasses.replace(w, start=w.start + offset, end=w.end + offset) for w in seg.words] if seg.words else seg.words
            yield dataclasses.replace(seg, start=seg.start + offset, end=seg.end + offset, seek=chunk[0].seek, words=words)


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
