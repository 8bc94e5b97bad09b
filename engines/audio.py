"""Decode any audio container PyAV (FFmpeg) understands to 16 kHz mono float32.

The format is detected from the bytes, never from the file name: clients send
whatever filename and content type they like.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import BinaryIO

import av
import numpy as np

from engines.errors import AudioDecodeError, AudioTooLongError

SAMPLE_RATE = 16_000
log = logging.getLogger("oyez.audio")


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32, mono, SAMPLE_RATE
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def decode_audio(source: str | BinaryIO, max_seconds: float | None = None, param: str = "file") -> Audio:
    """Decode the first audio stream of `source`, resampled to 16 kHz mono float32.

    A stream that breaks off after some audio (a corrupt last frame, a truncated
    upload) keeps what decoded; one that yields nothing raises AudioDecodeError.
    """
    try:
        container = av.open(source, mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise AudioDecodeError(f"The audio file could not be decoded: {_reason(exc)}", param) from None
    try:
        if not container.streams.audio:
            raise AudioDecodeError("The file contains no audio stream.", param)
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        max_samples = int(max_seconds * SAMPLE_RATE) if max_seconds else None
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(stream):
                frame.pts = None  # let the resampler count samples itself; broken pts break it
                for out in resampler.resample(frame):
                    total += _append(chunks, out)
                if max_samples is not None and total > max_samples:
                    raise AudioTooLongError(
                        f"The audio is longer than the limit of {max_seconds:g} seconds.", param
                    )
            for out in resampler.resample(None):
                total += _append(chunks, out)
        except (av.error.FFmpegError, ValueError) as exc:
            if total == 0:
                raise AudioDecodeError(f"The audio file could not be decoded: {_reason(exc)}", param) from None
            log.warning("audio stream broke off after %.2f s, keeping what decoded: %s", total / SAMPLE_RATE, exc)
    finally:
        container.close()
    if total == 0:
        raise AudioDecodeError("The audio file contains no audio samples.", param)
    samples = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    if not np.isfinite(samples).all():
        samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
    return Audio(samples=samples)


def _append(chunks: list[np.ndarray], frame: av.AudioFrame) -> int:
    data = frame.to_ndarray().reshape(-1).astype(np.float32, copy=False)
    if data.size:
        chunks.append(data)
    return int(data.size)


def _reason(exc: Exception) -> str:
    # FFmpeg errors read "[Errno N] Reason: 'where'"; keep the reason, drop codes and paths.
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc))
    return text.split(": '", 1)[0].strip().rstrip(".") or type(exc).__name__
