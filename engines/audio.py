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
from engines.types import SAMPLE_RATE

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
        resampler = mono_resampler()
        max_samples = int(max_seconds * SAMPLE_RATE) if max_seconds else None
        blocks = SampleBlocks()
        try:
            for frame in container.decode(stream):
                frame.pts = None  # let the resampler count samples itself; broken pts break it
                for out in resampler.resample(frame):
                    blocks.append(out.to_ndarray().reshape(-1))
                if max_samples is not None and blocks.total > max_samples:
                    raise AudioTooLongError(
                        f"The audio is longer than the limit of {max_seconds:g} seconds.", param
                    )
            for out in resampler.resample(None):
                blocks.append(out.to_ndarray().reshape(-1))
        except (av.error.FFmpegError, ValueError) as exc:
            if blocks.total == 0:
                raise AudioDecodeError(f"The audio file could not be decoded: {_reason(exc)}", param) from None
            log.warning("audio stream broke off after %.2f s, keeping what decoded: %s",
                        blocks.total / SAMPLE_RATE, exc)
    finally:
        container.close()
    if blocks.total == 0:
        raise AudioDecodeError("The audio file contains no audio samples.", param)
    return Audio(samples=blocks.join())


def mono_resampler() -> av.AudioResampler:
    """A resampler to 16 kHz mono float32 whose FFmpeg filter graph runs on the calling thread.

    From PyAV 18.1.1 the graph gets worker threads by default (`threads=0`), and they live until the garbage
    collector frees the graph: two threads more with every request. PyAV 18.1.0 takes no `threads` and starts none.
    """
    try:
        return av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE, threads=1)
    except TypeError:
        return av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)


class SampleBlocks:
    """Decoded samples gathered in large fixed-size blocks, joined at the end with one copy at a time.

    Decoders hand out frames of a few thousand samples. Keeping them as a list and calling
    np.concatenate holds the whole signal twice at the end (460 MB each for two hours), and the
    many small frames stay in the allocator's heap. Blocks of 64 MiB are above glibc's largest
    mmap threshold (32 MiB), so each is its own memory map that goes back to the system as
    soon as it is freed, and joining them block by block peaks at the signal plus one block.
    Pages of a block not yet written are not resident, so a short clip costs only its size.
    Non-finite samples (NaN/inf from broken float files) are zeroed frame by frame.
    """

    BLOCK = 1 << 24  # samples (64 MiB of float32)

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.fill = self.BLOCK  # samples used in the last block; BLOCK = none open
        self.total = 0

    def append(self, data: np.ndarray) -> None:
        data = data.astype(np.float32, copy=False)
        if not np.isfinite(data).all():
            data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
        pos = 0
        while pos < data.size:
            if self.fill == self.BLOCK:
                self.blocks.append(np.empty(self.BLOCK, dtype=np.float32))
                self.fill = 0
            n = min(self.BLOCK - self.fill, data.size - pos)
            self.blocks[-1][self.fill : self.fill + n] = data[pos : pos + n]
            self.fill += n
            pos += n
        self.total += int(data.size)

    def join(self) -> np.ndarray:
        """All samples as one array; the blocks are released as they are copied."""
        if len(self.blocks) == 1:
            out = self.blocks.pop()[: self.total].copy()  # one small copy, so no 64 MiB block stays allocated
            return out
        out = np.empty(self.total, dtype=np.float32)
        pos = 0
        while self.blocks:
            block = self.blocks.pop(0)
            n = min(self.BLOCK, self.total - pos)
            out[pos : pos + n] = block[:n]
            pos += n
            del block
        return out


def _reason(exc: Exception) -> str:
    # FFmpeg errors read "[Errno N] Reason: 'where'"; keep the reason, drop codes and paths.
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc))
    return text.split(": '", 1)[0].strip().rstrip(".") or type(exc).__name__
