"""faster-whisper's WhisperModel, with two savings on the encoder, the costliest call of a short request, and
runaway decodes of a short window cut short.

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

**A decode that uses up its token budget has failed.** The engine gives short windows a budget of new tokens
sized for their length (`FasterWhisperEngine.token_budget`) instead of Whisper's 448: a 0.8 s "uh" that sent the
decoder into a loop cost about 4 s per temperature of the fallback ladder on 2 cores, 13-23 s in all. Cut at the
budget, a loop is short enough to pass faster-whisper's compression-ratio check, so `generate_with_fallback`
counts a decode that fills its budget, or whose text is one phrase looping, as failed, as faster-whisper counts a
too-repetitive one. Chosen and measured in docs/benchmarks.md (scripts/eval_token_budget).
"""

from __future__ import annotations

import copy
import dataclasses
import threading

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel

from engines.coverage import is_loop

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

    def generate_with_fallback(self, encoder_output, prompt, tokenizer, options):
        """faster-whisper's temperature fallback, in which a decode that fills `max_new_tokens` also fails.

        Each temperature is tried as faster-whisper would (too repetitive, too improbable: the next one; improbable
        and probably no speech: stop, the window is skipped), and a decode that generated its whole budget (a
        forced prefix counts: its words are the same audio's) goes on to the next temperature too, as does one that is
        a single phrase looping (`is_loop`: beam search may end such a loop on its own before the budget, shorter than
        faster-whisper's compression check can see). When every temperature fails, the best finished decode is kept,
        as faster-whisper keeps one; when every one ran away or looped, the window gets no text.
        """
        if options.max_new_tokens is None:
            return super().generate_with_fallback(encoder_output, prompt, tokenizer, options)
        finished, repetitive = [], []
        attempt = None
        for temperature in options.temperatures:
            one = dataclasses.replace(options, temperatures=[temperature])
            attempt = super().generate_with_fallback(encoder_output, prompt, tokenizer, one)
            result, avg_logprob, _, ratio = attempt
            tokens = result.sequences_ids[0]
            runaway = len(tokens) >= options.max_new_tokens or is_loop(tokenizer.decode(tokens))
            too_repetitive = options.compression_ratio_threshold is not None and ratio > options.compression_ratio_threshold
            improbable = options.log_prob_threshold is not None and avg_logprob < options.log_prob_threshold
            silence = improbable and options.no_speech_threshold is not None and (
                result.no_speech_prob > options.no_speech_threshold)
            if silence or not (runaway or too_repetitive or improbable):
                return attempt
            if not runaway:
                (repetitive if too_repetitive else finished).append(attempt)
        candidates = finished or repetitive
        if not candidates:
            return _NoText(attempt[0]), attempt[1], attempt[2], attempt[3]
        best = max(candidates, key=lambda a: a[1])
        return best[0], best[1], attempt[2], best[3]  # the last temperature tried, as faster-whisper passes on

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


class _NoText:
    """A generation result with no tokens, for a window whose every decode ran away or looped (faster-whisper reads
    these fields)."""

    def __init__(self, result):
        self.sequences_ids = [[]]
        self.sequences = [[]]
        self.scores = [0.0]
        self.no_speech_prob = result.no_speech_prob
