"""faster-whisper's WhisperModel, encoding the first 30 s once when it detects the language.

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
"""

from __future__ import annotations

import threading

from faster_whisper import WhisperModel


class WhisperModelSharingFirstEncode(WhisperModel):
    _state = threading.local()

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
        output = super().encode(features)
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
