"""Speech-to-text with faster-whisper (CTranslate2), on CPU or CUDA."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import math
import time
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.vad import VadOptions, get_speech_timestamps

from engines.audio import Audio
from engines.batched import transcribe_batched
from engines.batching import BatchStats, CrossRequestBatcher, Lane
from engines.coverage import CoverageStats, ensure_coverage
from engines.errors import UnsupportedOptionError
from engines.longform import plan_windows, release_freed_memory, split_first
from engines.types import (
    SAMPLE_RATE,
    AudioInfo,
    Segment,
    TokenLogprob,
    TranscribeOptions,
    TranscriptionStream,
    Word,
)
from engines.whisper_model import WhisperModelSharingFirstEncode

log = logging.getLogger("oyez.whisper")

FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# A stream's short first window (engines/longform.split_first) decides the language when Whisper gives it
# at least this probability there; below, it is detected on up to 30 s first. Chosen in docs/benchmarks.md.
PIECE_LANGUAGE_CONFIDENCE = 0.9
# The coverage check's own VAD (engines/coverage.py): tight edges and short pauses, so a gap
# between segments is measured as speech only where someone speaks, whatever the request's VAD.
COVERAGE_VAD = VadOptions(threshold=0.5, min_speech_duration_ms=250, min_silence_duration_ms=300, speech_pad_ms=100)


# A decode of a short window may generate at most TOKEN_BUDGET_BASE + token_budget_per_second x its seconds
# new tokens (`FasterWhisperEngine.token_budget`). Whisper allows 448 tokens in all, prompt included, whatever the
# audio: a 0.8 s "uh" that sends the decoder into a loop costs four seconds per temperature of the fallback ladder.
TOKEN_BUDGET_BASE = 16
WINDOW_SECONDS = 30.0  # one Whisper window
MAX_PROMPT_TOKENS = 228  # faster-whisper keeps the last 223 tokens of the prompt, after up to 5 special tokens
PROMPT_SPECIAL_TOKENS = 6  # at most: previous-text marker, start, language, task, no-timestamps or timestamp-begin
MAX_WORDS_PER_SECOND = 20.0  # fast speech is 4-6; Whisper's own timestamps of a real segment stay well under this


def spoken_too_fast(text: str, seconds: float) -> bool:
    """A segment of 4 words or more timed faster than anyone speaks: a fallback decode (sampled at a high
    temperature) repeating the previous text in a sliver of time, e.g. 20 words in 0-0.1 s at a 30 s
    boundary. The coverage check (engines/coverage.py) decodes again any speech a dropped segment leaves bare."""
    words = len(text.split())
    return words >= 4 and words > MAX_WORDS_PER_SECOND * max(seconds, 0.0)


class FasterWhisperEngine:
    """One loaded Whisper model. Thread-safe: concurrent `transcribe` calls share the weights.

    Model calls go through a scheduler (engines/batching.py) that merges concurrent requests'
    calls into batches of up to `max_batch` and, on CPU, gives a lone request a replica of
    `solo_threads` threads; `batch_size` > 0 decodes a request's VAD chunks in batches (engines/batched.py);
    audio longer than about `window_seconds` is transcribed window by window
    (engines/longform.py) so working memory stays bounded however long the file is.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "auto",
        compute_type: str = "default",
        cpu_threads: int = 0,
        num_workers: int = 1,
        beam_size: int = 5,
        batch_size: int = 0,
        max_batch: int = 1,
        solo_threads: int = 0,
        window_seconds: float = 300.0,
        coverage: bool = True,
        trimmed_margin_s: float = 0.0,
        token_budget_per_second: float = 0.0,
    ):
        self.model = WhisperModelSharingFirstEncode(
            str(model_dir),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=num_workers,
            local_files_only=True,
            trimmed_margin_s=trimmed_margin_s,
        )
        self.device = self.model.model.device
        # Every model call goes through the scheduler (engines/batching.py): it picks the lane (on CPU the
        # solo replica for a lone request, else a one-thread replica), never oversubscribes the cores, and
        # merges concurrent requests' calls when max_batch > 1.
        lanes = [Lane(self.model.model, cost=max(1, cpu_threads) if self.device == "cpu" else 1, slots=num_workers)]
        if self.device == "cpu" and solo_threads > max(1, cpu_threads):
            solo = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type=self.model.model.compute_type,
                                              inter_threads=1, intra_threads=solo_threads)
            lanes.insert(0, Lane(solo, name="solo", cost=solo_threads, slots=1, solo=True))
        sot = self.model.hf_tokenizer.token_to_id("<|startoftranscript|>")
        self.batcher = CrossRequestBatcher(lanes, sot=sot, max_batch=max_batch,
                                           cores=max(solo_threads, lanes[-1].cost * num_workers))
        self.model.model = self.batcher
        self.compute_type = self.model.model.compute_type
        self.multilingual = bool(self.model.model.is_multilingual)
        self.beam_size = beam_size
        self.batch_size = batch_size
        self.window_seconds = window_seconds
        self.token_budget_per_second = token_budget_per_second
        self.coverage = coverage  # decode again the speech no segment covers (engines/coverage.py)
        self._token_bytes = lru_cache(maxsize=None)(self._token_bytes_uncached)
        if self.device == "cuda":
            self._warm_up()

    def _warm_up(self) -> None:
        """Decode one second of silence, so the first request does not pay for CUDA's start-up.

        The first GPU matrix product loads cuBLAS, and the ctranslate2 4.8.5 wheel holds machine code
        up to sm_86 and PTX for sm_86 only, so on newer GPUs its kernels are JIT-compiled on first use:
        15-21 s on an H100 (sm_90) with an empty CUDA cache, 0.6 s once the cache holds them.
        Doing it here keeps it out of request latency (/ready waits for it), and a GPU CTranslate2
        cannot compute on fails the load instead of every request.
        """
        started = time.monotonic()
        segments, _ = self.model.transcribe(
            np.zeros(16000, dtype=np.float32), language="en", beam_size=self.beam_size,
            vad_filter=False, condition_on_previous_text=False,
        )
        for _ in segments:
            pass
        log.info("warmed up on %s/%s in %.2fs", self.device, self.compute_type, time.monotonic() - started)

    def call_stats(self) -> BatchStats | None:
        """Model calls so far, by kind and lane (engines/batching.py); None once unloaded."""
        return self.batcher.snapshot() if self.batcher is not None else None

    def decoding(self) -> int:
        """Requests decoding on this engine now."""
        return self.batcher.active if self.batcher is not None else 0

    def close(self) -> None:
        """Free the weights (the registry calls this only when no request uses the engine)."""
        if self.batcher is not None:
            self.batcher.close()
            self.batcher = None
        self.model = None

    def transcribe(self, audio: Audio, options: TranscribeOptions) -> TranscriptionStream:
        """Start decoding; segments come out of the returned stream as they are produced."""
        self.check(options)
        self.batcher.enter()  # counted as decoding until its stream ends (engines/batching.py)
        try:
            return self._start(audio, options)
        except BaseException:
            self.batcher.leave()
            raise

    def _start(self, audio: Audio, options: TranscribeOptions) -> TranscriptionStream:
        model = self.model
        recorder = None
        if options.token_logprobs:
            # Per-request view of the model whose CTranslate2 `align` calls are recorded:
            # the aligner scores every emitted text token, which gives its log probability.
            model = copy.copy(self.model)
            recorder = _AlignRecorder(self.model.model)
            model.model = recorder
        if options.trim_padding:
            model = model.trimmed()
        duration = audio.duration
        windows = plan_windows(audio.samples, audio.sample_rate, self.window_seconds)
        language, language_probability = options.language, None
        unsure = False
        if options.early_first_segment:
            planned, windows = windows, split_first(audio.samples, audio.sample_rate, windows)
            unsure = windows != planned and language is None and self.multilingual
        a, b = windows[0]
        # The early first piece is a few seconds: encoding them without the padding is most of its speed-up. Not
        # when the piece must decide the language: on a trimmed encoding Whisper is right as often but less sure
        # (17 of 68 pieces reach PIECE_LANGUAGE_CONFIDENCE instead of 64), so most would wait for the 30 s detection.
        trim_piece = options.early_first_segment and (language is not None or not self.multilingual)
        first_model = model.trimmed() if trim_piece else model
        segments, info = self._run(first_model, audio.samples[a:b], options, language, options.prompt)
        if unsure and info.language_probability < PIECE_LANGUAGE_CONFIDENCE:
            # The short first window decides the language for the whole file. When its few seconds leave
            # Whisper unsure, decide on up to 30 s, as a whole first window would have (one more encoder
            # pass before the first text); the piece's undecoded segments are dropped.
            language, language_probability = self._detect_language(audio, planned[0], options.vad)
            segments, info = self._run(first_model, audio.samples[a:b], options, language, options.prompt)
        if language_probability is not None:
            info = dataclasses.replace(info, language_probability=language_probability)
        prompt_tokens = len(self._encode(" " + options.prompt.strip())) if options.prompt else 0
        if len(windows) == 1:
            converted = self._convert(segments, duration, recorder, options.word_timestamps)
        else:
            def progress(speech: float) -> None:  # the speech seen so far counts in usage
                stream.audio = AudioInfo(duration=duration, speech_duration=speech)

            converted = self._windowed(model, audio, windows, (segments, info), options, recorder, progress)
        stats = CoverageStats()
        if self.coverage:
            converted = ensure_coverage(
                converted,
                duration=duration,
                find_speech=lambda a, b: _speech(audio, a, b),
                redecode=lambda a, b, prompt: self._redecode(audio, a, b, prompt, options, info.language),
                stats=stats,
                prompt=options.prompt or "",
            )
        stream = TranscriptionStream(
            _CountedSegments(converted, self.batcher.leave),
            language=info.language,
            language_probability=float(info.language_probability or 0.0),
            audio=AudioInfo(duration=duration, speech_duration=float(info.duration_after_vad or 0.0)),
            prompt_tokens=prompt_tokens,
            task=options.task,
            coverage=stats,
        )
        return stream

    def _redecode(self, audio: Audio, start: float, end: float, prompt: str, options: TranscribeOptions,
                  language: str) -> list[Segment]:
        """Decode audio[start:end] (seconds) on its own, no VAD, after `prompt`; times on the file's timeline."""
        model, recorder = self.model, None
        if options.token_logprobs:  # its own recorder: the main decode's alignments stay in order
            model = copy.copy(self.model)
            recorder = _AlignRecorder(self.model.model)
            model.model = recorder
        if options.trim_padding:
            model = model.trimmed()
        rate = audio.sample_rate
        a, b = int(start * rate), int(end * rate)
        temperatures = list(FALLBACK_TEMPERATURES if options.temperature == 0 else (options.temperature,))
        segments, _ = model.transcribe(
            audio.samples[a:b], language=language, task=options.task, beam_size=self.beam_size,
            initial_prompt=prompt or None, word_timestamps=options.word_timestamps or options.token_logprobs,
            temperature=temperatures, vad_filter=False, max_new_tokens=self.token_budget(end - start),
        )
        return list(self._convert(segments, b / rate, recorder, options.word_timestamps, offset=a / rate))

    def _detect_language(self, audio: Audio, window: tuple[int, int], vad) -> tuple[str, float]:
        a, b = window
        b = min(b, a + 60 * audio.sample_rate)  # VAD may keep less than half of it
        vad_options = VadOptions(threshold=vad.threshold, speech_pad_ms=vad.speech_pad_ms,
                                 min_silence_duration_ms=vad.min_silence_duration_ms) if vad is not None else None
        language, probability, _ = self.model.detect_language(
            audio.samples[a:b], vad_filter=vad is not None, vad_parameters=vad_options
        )
        return language, float(probability)

    def _run(self, model: WhisperModel, samples: np.ndarray, options: TranscribeOptions, language, prompt):
        """One faster-whisper call over `samples` (a whole file or one window of it)."""
        temperatures = list(FALLBACK_TEMPERATURES if options.temperature == 0 else (options.temperature,))
        if not options.fallback:
            temperatures = temperatures[:1]
        vad = options.vad
        vad_options = (
            VadOptions(
                threshold=vad.threshold,
                speech_pad_ms=vad.speech_pad_ms,
                min_silence_duration_ms=vad.min_silence_duration_ms,
            )
            if vad is not None
            else None
        )
        common = dict(
            language=language,
            task=options.task,
            beam_size=options.beam_size or self.beam_size,
            initial_prompt=prompt or None,
            word_timestamps=options.word_timestamps or options.token_logprobs,
        )
        if options.prefix:
            common["prefix"] = options.prefix
        if options.without_timestamps:
            common["without_timestamps"] = True
        if self.batch_size > 0 and not options.prefix and not options.without_timestamps:
            return transcribe_batched(model, samples, batch_size=self.batch_size, temperatures=temperatures,
                                      vad=vad_options, **common)
        # The budget needs the sequential decoder's fallback ladder (engines/whisper_model.py), so the batched one has none.
        one_decode = options.without_timestamps and len(samples) <= WINDOW_SECONDS * SAMPLE_RATE
        segments, info = model.transcribe(samples, temperature=temperatures, vad_filter=vad is not None,
                                          vad_parameters=vad_options,
                                          max_new_tokens=self.token_budget(len(samples) / SAMPLE_RATE, options.prefix,
                                                                           prompt=prompt, one_decode=one_decode),
                                          **common)
        if one_decode:
            # Without timestamp tokens one decode covers the window. With word timestamps (logprobs) faster-whisper
            # would then seek back to the last word's end and decode the rest again: on the trailing silence of a
            # live turn that gave "Thank you. Thank you." So the window's first decode is all.
            segments = itertools.islice(segments, 1)
        return segments, info

    def token_budget(self, seconds: float, prefix: str | None = None, prompt: str | None = None,
                     one_decode: bool = False) -> int | None:
        """The most new tokens a decode of `seconds` of audio may generate, or None for Whisper's own limit.

        Fast speech is about 8 text tokens a second, plus two timestamp tokens per segment. A decode that uses
        the whole budget counts as failed and the next temperature is tried (engines/whisper_model.py). Windows
        long enough to need about as much as Whisper's own limit, and decodes whose forced prefix leaves too
        little room beside the prompt, keep that limit. The prompt is the longest one faster-whisper may build
        (the text of the window before), or with `one_decode` (a window decoded once, without timestamps) the
        request's own `prompt`: a live turn decoded after the previous one (engines/live_context.py) is 10-20 s of
        audio and its budget fits beside a short prompt. Applies to sequential decodes only.
        """
        if self.token_budget_per_second <= 0:
            return None
        budget = TOKEN_BUDGET_BASE + math.ceil(self.token_budget_per_second * min(seconds, 30.0))
        if one_decode:
            used = PROMPT_SPECIAL_TOKENS + (min(len(self._encode(" " + prompt.strip())), 223) if prompt else 0)
        else:
            used = MAX_PROMPT_TOKENS
        room = 448 - used - (len(self._encode(" " + prefix.strip())) if prefix else 0)
        return budget if budget < room else None

    def _windowed(self, model, audio: Audio, windows, first, options, recorder, progress) -> Iterator[Segment]:
        """Transcribe window after window, with timestamps on the file's timeline.

        The language found in the first window holds for the rest. Each window gets only the
        request's prompt: carrying the previous window's text over as a prompt made Whisper
        repeat that text instead of transcribing the window (seen in testing), and within a
        window faster-whisper still conditions each 30-second piece on the one before.
        """
        rate, duration, total = audio.sample_rate, audio.duration, len(windows)
        started = time.monotonic()
        index, speech = 0, 0.0
        log.info("long audio: %.0f s in %d windows", duration, total)
        for number, (a, b) in enumerate(windows):
            if number == 0:
                segments, info = first
            else:
                segments, info = self._run(model, audio.samples[a:b], options, first[1].language, options.prompt)
            speech += float(info.duration_after_vad or 0.0)
            for seg in self._convert(segments, b / rate, recorder, options.word_timestamps,
                                     offset=a / rate, first_id=index):
                index += 1
                yield seg
            progress(speech)
            release_freed_memory()
            log.info("long audio: window %d/%d done (%.0f of %.0f s) after %.1f s",
                     number + 1, total, b / rate, duration, time.monotonic() - started)

    def check(self, options: TranscribeOptions) -> None:
        """Raise UnsupportedOptionError for options this model cannot honour."""
        if self.multilingual:
            return
        if options.task == "translate":
            raise UnsupportedOptionError("This model is English-only and cannot translate.", "model")
        if options.language not in (None, "en"):
            raise UnsupportedOptionError(
                f"This model is English-only; language {options.language!r} is not supported.", "language"
            )

    def _convert(self, segments, duration: float, recorder, keep_words: bool,
                 offset: float = 0.0, first_id: int = 0) -> Iterator[Segment]:
        """faster-whisper segments -> ours, shifted by `offset` s and clamped to [offset, duration]."""
        eot = self.model.hf_tokenizer.token_to_id("<|endoftext|>")
        last_start = offset
        index = first_id
        try:
            for seg in segments:
                text_tokens = [t for t in seg.tokens if t < eot]
                start = _clamp(seg.start + offset, last_start, duration)
                end = _clamp(seg.end + offset, start, duration)
                last_start = start
                words = []
                if keep_words and seg.words:
                    word_start = start
                    for w in seg.words:
                        ws = _clamp(w.start + offset, word_start, end)
                        we = _clamp(w.end + offset, ws, end)
                        words.append(Word(word=w.word.strip(), start=ws, end=we, probability=float(w.probability)))
                        word_start = ws
                logprobs = []
                if recorder is not None:
                    probs = recorder.take(text_tokens)
                    logprobs = [
                        self._logprob(token, prob) for token, prob in zip(text_tokens, probs)
                    ] if probs is not None else []
                # Timed on the file's timeline after clamping, plus up to 1 s that Whisper put past the end of the
                # audio. Seen: a window's last 0.15 s decoded as a chunk of its own, "30.0-37.0 s" in a window that
                # ends at 30.15 s, 32 words repeating the text before.
                seconds = end - start + min(max(seg.end + offset - duration, 0.0), 1.0)
                if spoken_too_fast(seg.text, seconds):
                    log.info("dropped a segment of %d words in %.2f s at %.1f s (temperature %.1f): no one speaks "
                             "that fast", len(seg.text.split()), seconds, start, seg.temperature or 0.0)
                    continue
                yield Segment(
                    id=index,
                    seek=int(seg.seek) + int(round(offset * 100)),
                    start=start,
                    end=end,
                    text=seg.text,
                    tokens=list(seg.tokens),
                    temperature=float(seg.temperature or 0.0),
                    avg_logprob=float(seg.avg_logprob),
                    compression_ratio=float(seg.compression_ratio),
                    no_speech_prob=float(seg.no_speech_prob),
                    text_token_count=len(text_tokens),
                    words=words,
                    logprobs=logprobs,
                )
                index += 1
        finally:
            close = getattr(segments, "close", None)
            if close:
                close()

    def _logprob(self, token_id: int, prob: float) -> TokenLogprob:
        raw = self._token_bytes(token_id)
        return TokenLogprob(
            token=raw.decode("utf-8", errors="replace"),
            logprob=math.log(prob) if prob > 0 else -1e4,
            bytes=list(raw),
        )

    def _token_bytes_uncached(self, token_id: int) -> bytes:
        piece = self.model.hf_tokenizer.id_to_token(token_id) or ""
        decoder = _byte_decoder()
        try:
            return bytes(decoder[ch] for ch in piece)
        except KeyError:
            return piece.encode("utf-8")

    def _encode(self, text: str) -> list[int]:
        return self.model.hf_tokenizer.encode(text, add_special_tokens=False).ids


class _CountedSegments:
    """A request's segments, counted as one decoding request until they end, fail or are closed."""

    def __init__(self, segments: Iterator[Segment], leave):
        self._segments = segments
        self._leave = leave

    def __iter__(self) -> Iterator[Segment]:
        return self

    def __next__(self) -> Segment:
        try:
            return next(self._segments)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        leave, self._leave = self._leave, None
        if leave is not None:
            leave()
            close = getattr(self._segments, "close", None)
            if close:
                close()

    __del__ = close


class _AlignRecorder:
    """Stands in for the CTranslate2 model of one request and records what `align` scored.

    faster-whisper aligns each decoded window's text tokens once (for word timestamps);
    the alignment returns each token's probability under the model given the audio and
    the tokens before it. Segments of a window are yielded after its alignment, in order,
    so `take` finds each segment's tokens in the records with a moving cursor.
    """

    def __init__(self, inner):
        self._inner = inner
        self._records: list[tuple[list[int], list[float]]] = []
        self._record = 0
        self._pos = 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def align(self, encoder_output, start_sequence, text_tokens, num_frames, **kwargs):
        results = self._inner.align(encoder_output, start_sequence, text_tokens, num_frames, **kwargs)
        for tokens, result in zip(text_tokens, results):
            self._records.append((list(tokens), [float(p) for p in result.text_token_probs]))
        return results

    def take(self, tokens: list[int]) -> list[float] | None:
        if not tokens:
            return []
        record, pos = self._record, self._pos
        while record < len(self._records):
            rec_tokens, rec_probs = self._records[record]
            found = _find(rec_tokens, tokens, pos)
            if found >= 0:
                self._record, self._pos = record, found + len(tokens)
                return rec_probs[found : found + len(tokens)]
            record, pos = record + 1, 0
        log.warning("no alignment recorded for a segment's tokens; its logprobs are omitted")
        return None


def _find(haystack: list[int], needle: list[int], start: int) -> int:
    n = len(needle)
    for i in range(start, len(haystack) - n + 1):
        if haystack[i : i + n] == needle:
            return i
    return -1


def _speech(audio: Audio, start: float, end: float) -> list[tuple[float, float]]:
    """Silero VAD's speech spans in audio[start:end] (seconds), on the file's timeline."""
    rate = audio.sample_rate
    a = int(start * rate)
    found = get_speech_timestamps(audio.samples[a:int(end * rate)], COVERAGE_VAD, sampling_rate=rate)
    return [((a + ts["start"]) / rate, (a + ts["end"]) / rate) for ts in found]


def _clamp(value: float, low: float, high: float) -> float:
    return float(min(max(value, low), high))


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-unicode table, which Whisper's byte-level BPE uses."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}
