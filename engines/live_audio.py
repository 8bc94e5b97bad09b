"""Raw audio of a live session -> 16 kHz mono float32, chunk by chunk.

Realtime clients send headerless audio: 16-bit little-endian PCM at 24 kHz (`audio/pcm`) or
G.711 at 8 kHz (`audio/pcmu` µ-law, `audio/pcma` A-law). G.711 is expanded through a 256-entry
table (ITU-T G.711, as in the reference g711.c; the stdlib's audioop is deprecated), and every
format is resampled by FFmpeg's swresample through PyAV, whose resampler keeps its filter state
between chunks, so a stream cut into any pieces resamples as one signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from engines.audio import mono_resampler
from engines.types import SAMPLE_RATE


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


ULAW = _ulaw_table()
ALAW = _alaw_table()


@dataclass(frozen=True)
class RawFormat:
    """A headerless input format: how bytes become 16-bit samples, and at what rate."""

    name: str
    rate: int
    bytes_per_sample: int

    def to_int16(self, data: bytes) -> np.ndarray:
        if self.name == "pcm16":
            return np.frombuffer(data, dtype="<i2")
        table = ULAW if self.name == "ulaw" else ALAW
        return table[np.frombuffer(data, dtype=np.uint8)]


PCM16_24K = RawFormat("pcm16", 24_000, 2)
G711_ULAW = RawFormat("ulaw", 8_000, 1)
G711_ALAW = RawFormat("alaw", 8_000, 1)


class LiveAudioDecoder:
    """Turns chunks of one raw stream into 16 kHz float32, carrying odd bytes and filter state over."""

    def __init__(self, fmt: RawFormat):
        self.format = fmt
        self._carry = b""
        self._resampler = mono_resampler()

    def close(self) -> None:
        """Free the resampler (its FFmpeg filter graph) now: a session object may outlive its connection until
        the garbage collector finds it."""
        self._resampler = None

    def decode(self, data: bytes) -> np.ndarray:
        if self._resampler is None:
            raise ValueError("the audio decoder is closed")
        data = self._carry + data
        usable = len(data) - len(data) % self.format.bytes_per_sample
        self._carry = data[usable:]
        if usable == 0:
            return np.zeros(0, dtype=np.float32)
        samples = self.format.to_int16(data[:usable])
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.format.rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(0, dtype=np.float32)
