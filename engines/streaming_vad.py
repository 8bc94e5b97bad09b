"""Silero VAD run frame by frame on a live stream, and server-side turn detection on top of it.

faster-whisper ships Silero VAD v6 as one ONNX graph whose LSTM runs over the first input axis:
each row is one 32 ms frame (512 samples at 16 kHz) preceded by the last 64 samples of the frame
before it, and the LSTM state (h, c) goes in and out of every call. Carrying that state and the
64-sample context from call to call gives the same probabilities as one pass over the whole signal
(tests/test_realtime_unit.py checks it), so a live session only ever runs the new frames.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

FRAME = 512  # samples at 16 kHz: 32 ms
CONTEXT = 64
RATE = 16_000


@lru_cache(maxsize=1)
def _session():
    """One ONNX session for every stream (InferenceSession.run is thread-safe); state lives in the streams."""
    import onnxruntime
    from faster_whisper.utils import get_assets_path

    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    opts.enable_cpu_mem_arena = False
    opts.log_severity_level = 4
    path = os.path.join(get_assets_path(), "silero_vad_v6.onnx")
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"], sess_options=opts)


_load_lock = threading.Lock()


def load_vad() -> None:
    """Load the VAD model now (blocking), so the first live frame does not wait for it."""
    with _load_lock:
        _session()


class StreamingVad:
    """Speech probabilities, one per 512-sample frame, for a stream fed in pieces of any size."""

    def __init__(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        data = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        frames = len(data) // FRAME
        self._pending = data[frames * FRAME :].copy()
        if frames == 0:
            return np.zeros(0, dtype=np.float32)
        rows = data[: frames * FRAME].reshape(frames, FRAME)
        context = np.concatenate([self._context[None, :], rows[:-1, -CONTEXT:]], axis=0)
        self._context = rows[-1, -CONTEXT:].copy()
        with _load_lock:
            session = _session()
        out, self._h, self._c = session.run(
            None, {"input": np.concatenate([context, rows], axis=1), "h": self._h, "c": self._c}
        )
        return np.asarray(out, dtype=np.float32).reshape(-1)


@dataclass(frozen=True)
class TurnParams:
    """OpenAI's server_vad knobs."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True)
class TurnEvent:
    kind: str  # "start" or "stop"
    sample: int  # on the stream's 16 kHz timeline: the turn's first sample (with padding), or its end
    speech_end: int | None = None  # on a stop: where the silence that ended the turn began


class TurnDetector:
    """Speech starts at the first frame at or over `threshold`; it stops once the probability has
    stayed under `threshold - 0.15` (Silero's hysteresis) for `silence_duration_ms`. A start is
    reported `prefix_padding_ms` early (never before `floor`, the first sample the caller still
    holds, nor before the end of the previous turn); a stop at the end of the silence that ended the turn, as OpenAI does.
    """

    def __init__(self, params: TurnParams, position: int = 0):
        self.params = params
        self.position = position  # samples of the stream seen so far (whole frames)
        self.speaking = False
        self._silence_from: int | None = None
        self._last_stop = 0  # a turn's padding never reaches back into the turn before it
        self._neg = max(params.threshold - 0.15, 0.01)

    def feed(self, probs: np.ndarray, floor: int = 0) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        pad = self.params.prefix_padding_ms * RATE // 1000
        silence = self.params.silence_duration_ms * RATE // 1000
        for p in probs:
            start, self.position = self.position, self.position + FRAME
            if not self.speaking:
                if p >= self.params.threshold:
                    self.speaking, self._silence_from = True, None
                    events.append(TurnEvent("start", max(floor, self._last_stop, start - pad)))
                continue
            if p >= self.params.threshold or (p >= self._neg and self._silence_from is None):
                self._silence_from = None
                continue
            if self._silence_from is None:
                self._silence_from = start
            if self.position - self._silence_from >= silence:
                events.append(TurnEvent("stop", self.position, speech_end=self._silence_from))
                self.speaking, self._silence_from, self._last_stop = False, None, self.position
        return events

    @property
    def silence_from(self) -> int | None:
        """Within a turn, where the silence heard since began (None while speech goes on): if it lasts
        `silence_duration_ms` the turn stops there, with this as its `speech_end`."""
        return self._silence_from if self.speaking else None
