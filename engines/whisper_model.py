"""faster-whisper's WhisperModel, with two savings on the encoder, the costliest call of a short request.

**The first 30 s are encoded once when the language is detected.**

faster-whisper 1.2.1 detects the language by encoding the first window, then throws that encoder
output away and encodes the same window again to transcribe it (its 1.0 releases passed it on). One
encoder pass is most of the cost of a short request: on 2 cores with `base` int8 it is about 1 s of a
3 s request. This subclass keeps the first encoder output of the detection made inside `transcribe`
and hands it to `generate_segments` as the first window's encoding, which faster-whisper accepts for
that purpose. For audio of 30 s or more (after VAD) the two inputs are the same frames; for shorter
audio the detection's input holds one more 10 ms frame before the padding, as it did in faster-whisper
1.0. Measured in docs/benchmarks.md.

The hand-over is per thread: `transcribe` runs the detection and creates the segment generator in the
calling thread, before returning.

**Padding is not encoded** where latency is the point (`trimmed()`, on CPU). Whisper's encoder always takes
30 s: faster-whisper pads a shorter window with zero features, and the encoder's cost is the same for 3 s of
speech as for 30.
Encoding only the speech plus a margin and appending, after it, the encoder's output for a window of pure
padding (computed once per model, the positions from the margin's end to 30 s) gives the decoder the 1500
positions it was trained on at a fraction of the cost: on 2 cores with a 15 s margin, the 34 held-out clips of
1.5-30 s took 15.0 s of encoder time instead of 38.3 s. Without the appended padding (the encoder's output cut short, as
whisper.cpp's `audio_ctx` does), `base` looped on short clips; with a margin of 3-5 s it got the language of
short clips wrong and repeated itself, because real padding's output next to speech differs from pure
padding's. The text still differs from a whole-window decode's here and there, so only decodes someone waits on
use it. The margin was chosen on half of ../shared/data's clips and checked on the other half
(scripts/eval_trimmed_encode, docs/benchmarks.md).
"""

from __future__ import annotations

import copy
import threading

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel

WINDOW_FRAMES = 3000  # 30 s of 10 ms feature frames; the encoder halves them into 1500 positions


class WhisperModelSharingFirstEncode(WhisperModel):
    _state = threading.local()

    def __init__(self, *args, trimmed_margin_s: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.margin_frames = 0  # this view's margin (see `trimmed`, which sets it only with _padding_output); 0 = whole
        self._trimmed_margin_frames = 0
        self._padding_output: np.ndarray | None = None
        if trimmed_margin_s > 0 and self.model.device == "cpu":
            self._trimmed_margin_frames = int(round(trimmed_margin_s * 100))
            # The encoder's output for 30 s of padding alone: the tail appended after a trimmed encoding.
            self._padding_output = np.asarray(super().encode(np.zeros((80, WINDOW_FRAMES), np.float32)))

    def trimmed(self) -> WhisperModelSharingFirstEncode:
        """A view of this model (same weights) that encodes a short window's speech plus the margin only;
        this model itself when trimming is off (no margin, or not on CPU)."""
        if not self._trimmed_margin_frames:
            return self
        view = copy.copy(self)
        view.margin_frames = self._trimmed_margin_frames
        return view

    def transcribe(self, *args, **kwargs):
        state = self._state
        state.inside, state.detecting, state.first = True, False, None
        try:
            return super().transcribe(*args, **kwargs)
        finally:
            state.inside, state.detecting, state.first = False, False, None

    def detect_language(self, *args, **kwargs):
        state = self._state
        state.detecting = getattr(state, "inside", False)
        try:
            return super().detect_language(*args, **kwargs)
        finally:
            state.detecting = False

    def encode(self, features):
        output = self._encode_trimmed(features)
        state = self._state
        if getattr(state, "detecting", False) and state.first is None:
            state.first = output  # the first window's encoding; later detection windows are not kept
        return output

    def generate_segments(self, features, tokenizer, options, log_progress, encoder_output=None):
        state = self._state
        if encoder_output is None and getattr(state, "inside", False):
            encoder_output = state.first  # used by faster-whisper for the window at seek 0 only
        state.first = None
        return super().generate_segments(features, tokenizer, options, log_progress, encoder_output)

    def _encode_trimmed(self, features):
        """The encoder's output for `features` (a padded 30 s window, or a batch of them); when the padding is
        longer than the margin, only the frames up to the margin are encoded and pure padding's output follows."""
        frames = self._frames_to_encode(features)
        if frames is None:
            return super().encode(features)
        head = np.asarray(super().encode(np.ascontiguousarray(features[..., :frames])))
        tail = self._padding_output[:, frames // 2:]
        tail = np.broadcast_to(tail, (head.shape[0], *tail.shape[1:]))
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.concatenate([head, tail], axis=1)))

    def _frames_to_encode(self, features) -> int | None:
        """Frames up to the last non-padding one plus the margin (even, so they halve exactly), or None to encode
        the window whole. Padding is the zero frames faster-whisper appends (`pad_or_trim`); a frame of audio is
        all zeros only if every mel band sits exactly at faster-whisper's normalisation point."""
        if not self.margin_frames or not isinstance(features, np.ndarray) or features.shape[-1] != WINDOW_FRAMES:
            return None
        spoken = np.flatnonzero(np.any(features.reshape(-1, *features.shape[-2:]) != 0, axis=(0, 1)))
        frames = (int(spoken[-1]) + 1 if len(spoken) else 0) + self.margin_frames
        frames += frames % 2
        return frames if frames < WINDOW_FRAMES else None
