"""One Realtime transcription session, and the service that admits sessions.

A session has three tasks on the event loop: the receiver reads client events in order (audio is
turned into 16 kHz samples and run through the streaming VAD in a worker thread, one call per
append), one task transcribes committed turns one at a time, and one decodes the turn being
spoken. A scheduler slot is held only for each decode (a quick partial decode of the growing turn,
or the final decode of a committed one), so an open session that is quiet holds nothing but its
socket and a few seconds of audio.

Text while the speaker speaks: every `realtime.partial_interval_seconds` of new speech, the turn so
far is decoded greedily, with the words already sent forced as its prefix; words two consecutive
decodes agree on are sent as deltas (engines/local_agreement.py). A partial decode starts only when
nobody waits for the model's pool and it leaves one run slot free, so it never goes ahead of a file
request or a final decode, and one that arrives while partials run finds a slot.
When the turn ends, one full decode (beam search, the sent words as prefix) gives the rest. Partial and final
decodes hear the previous turn first, that turn's text forced before the sent words (engines/live_context.py),
once that turn is transcribed.

With `realtime.early_final_ms` set (off by default: its shorter audio cost words), that final decode
starts early: once the speaker has been silent for `realtime.early_final_ms`
(before `silence_duration_ms` confirms the end of the turn), the turn so far is decoded as the final
would be. If no speech comes back before the turn stops, that decode is the final one, already under
way (only trailing silence separates its audio from the committed turn's); if speech comes back, it
served as one more partial decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import anyio
import numpy as np
from prometheus_client import Counter, Gauge, Histogram
from starlette.websockets import WebSocket, WebSocketDisconnect

from engines.audio import Audio
from engines.errors import EngineError
from engines.live_audio import G711_ALAW, G711_ULAW, PCM16_24K, LiveAudioDecoder
from engines.live_context import TurnContext, after_context, in_context, previous_turn
from engines.local_agreement import LocalAgreement, Word, join, words_of
from engines.streaming_vad import StreamingVad, TurnDetector
from engines.types import SAMPLE_RATE, TranscribeOptions, Transcript, VadParams
from server.decoding import Decoding
from server.errors import APIError, from_engine_error
from server.metrics import LATENCY_BUCKETS
from server.realtime.protocol import (
    MIN_COMMIT_MS,
    ProtocolError,
    SessionConfig,
    apply_update,
    decode_audio_field,
    error_event,
    event,
    logprobs_json,
    new_id,
    parse_event,
)
from server.catalogue import capabilities_of
from server.render import usage_for

log = logging.getLogger("oyez.realtime")

RAW_FORMATS = {"audio/pcm": PCM16_24K, "audio/pcmu": G711_ULAW, "audio/pcma": G711_ALAW}
DEFAULT_MODEL = "gpt-4o-transcribe"
PARTIAL_MAX_S = 30.0  # partial decodes stop past one Whisper window; the rest comes at the turn's end
MS = SAMPLE_RATE // 1000


class RealtimeService:
    """Admits sessions (at most `realtime.max_sessions` open) and keeps their metrics."""

    def __init__(self, app_state):
        self.state = app_state
        self.settings = app_state.settings
        self.open = 0
        r = app_state.metrics.registry
        self.m_open = Gauge("oyez_realtime_sessions", "Realtime transcription sessions open now.", registry=r)
        self.m_sessions = Counter("oyez_realtime_sessions_started", "Realtime sessions accepted or refused.",
                                  ["outcome"], registry=r)
        self.m_turns = Counter("oyez_realtime_turns", "Realtime turns transcribed, by model and outcome.",
                               ["model", "outcome"], registry=r)
        self.m_latency = Histogram(
            "oyez_realtime_turn_latency_seconds", "From the end of a turn (speech_stopped or commit) to its "
            "`completed` event.", ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.m_early = Counter(
            "oyez_realtime_early_finals", "Final decodes started in a silence before the turn ended: used as the "
            "turn's final decode, or superseded because speech came back.", ["outcome"], registry=r)
        self.m_first_delta = Histogram(
            "oyez_realtime_first_delta_seconds", "From speech_started to a turn's first delta.", ["model"],
            buckets=LATENCY_BUCKETS, registry=r)

    async def serve(self, ws: WebSocket, model_hint: str | None) -> None:
        offered = ws.scope.get("subprotocols") or []
        await ws.accept(subprotocol="realtime" if "realtime" in offered else None)
        if self.open >= self.settings.realtime.max_sessions:
            self.m_sessions.labels("refused").inc()
            refusal = ProtocolError(
                f"Too many realtime sessions are open on this server (limit {self.settings.realtime.max_sessions}); "
                "please retry later.", type="requests", code="rate_limit_exceeded")
            with contextlib.suppress(Exception):
                await ws.send_json(error_event(refusal))
                await ws.close(code=1013)
            return
        self.open += 1
        self.m_open.inc()
        self.m_sessions.labels("accepted").inc()
        try:
            await Session(self, ws, model_hint).run()
        finally:
            self.open -= 1
            self.m_open.dec()


@dataclass
class EarlyFinal:
    """A final decode started before the turn was known to end: valid if the turn's speech ended at `speech_end`."""

    speech_end: int  # where the silence it was started in began
    task: asyncio.Task


@dataclass
class Turn:
    """One item: audio from `start` (a sample on the session's timeline) to `end` once it ended."""

    item_id: str
    start: int
    end: int | None = None
    samples: np.ndarray | None = None  # set when committed
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    partial_at: int = 0  # turn length (samples) at the last partial decode
    sent_any: bool = False
    final_started: bool = False
    started_at: float = field(default_factory=time.monotonic)
    ended_at: float | None = None
    live: bool = True  # server VAD turn: partial decodes allowed
    speech_end: int | None = None  # server VAD: where the silence that ended the turn began
    early: EarlyFinal | None = None
    previous_item: str | None = None  # the item committed before this turn began: its context, once transcribed


class AudioBuffer:
    """The uncommitted audio of a session: chunks of 16 kHz samples from sample `start` on."""

    def __init__(self) -> None:
        self.chunks: deque[np.ndarray] = deque()
        self.start = 0
        self.end = 0

    def append(self, samples: np.ndarray) -> None:
        if samples.size:
            self.chunks.append(samples)
            self.end += samples.size

    def take(self, a: int, b: int) -> np.ndarray:
        """Copy of samples [a, b) (clamped to what is held)."""
        a, b = max(a, self.start), min(b, self.end)
        out, pos = [], self.start
        for chunk in self.chunks:
            lo, hi = pos, pos + chunk.size
            if hi > a and lo < b:
                out.append(chunk[max(a - lo, 0) : min(b, hi) - lo])
            pos = hi
            if pos >= b:
                break
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def drop_until(self, sample: int) -> None:
        while self.chunks and self.start + self.chunks[0].size <= sample:
            self.start += self.chunks.popleft().size
        if self.chunks and sample > self.start:
            cut = sample - self.start
            self.chunks[0] = self.chunks[0][cut:]
            self.start = sample
        if not self.chunks:
            self.start = self.end = max(self.end, sample)

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


class Session:
    def __init__(self, service: RealtimeService, ws: WebSocket, model_hint: str | None):
        self.service, self.ws = service, ws
        self.settings = service.settings
        self.registry = service.state.registry
        self.scheduler = service.state.scheduler
        model = DEFAULT_MODEL
        if model_hint:
            with contextlib.suppress(Exception):
                if self.registry.spec(model_hint).kind == "speech":
                    model = model_hint
        self.config = SessionConfig(model=model)
        self.id = new_id("sess")
        self.expires_at = int(time.time() + self.settings.realtime.max_session_seconds)
        self.decoder = LiveAudioDecoder(RAW_FORMATS[self.config.format])
        self.vad = StreamingVad()
        self.detector = TurnDetector(self.config.turn_detection) if self.config.turn_detection else None
        self.buffer = AudioBuffer()
        self.current: Turn | None = None  # the server-VAD turn being spoken
        self.finals: deque[Turn] = deque()
        self.last_item: str | None = None
        self.history: deque[str] = deque(maxlen=16)  # the last completed transcripts: the next turns' context
        self.context: TurnContext | None = None  # the last server-VAD turn, heard before the next one's decodes
        self.context_item: str | None = None  # the item `context` is the audio and text of
        self.wake = asyncio.Event()  # new audio in a turn being spoken
        self.finals_ready = asyncio.Event()
        self.send_lock = asyncio.Lock()
        self.closed = False

    # -- plumbing ---------------------------------------------------------------------------
    async def send(self, message: dict) -> None:
        if self.closed:
            return
        async with self.send_lock:
            try:
                await self.ws.send_json(message)
            except Exception:  # the client went away mid-send: the receiver notices and ends the session
                self.closed = True

    async def run(self) -> None:
        await self.send(event("session.created", session=self.session_json()))
        tasks = [asyncio.create_task(self.final_loop(), name=f"realtime-finals-{self.id}"),
                 asyncio.create_task(self.partial_loop(), name=f"realtime-partials-{self.id}")]
        try:
            with anyio.move_on_after(self.settings.realtime.max_session_seconds) as scope:
                await self.receive_loop()
            if scope.cancel_called and not self.closed:
                minutes = self.settings.realtime.max_session_seconds / 60
                await self.send(error_event(ProtocolError(
                    f"Your session hit the maximum duration of {minutes:g} minutes.", code="session_expired")))
                self.closed = True
                with contextlib.suppress(Exception):
                    await self.ws.close(code=1000)
        finally:
            self.closed = True
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self.buffer = AudioBuffer()
            self.finals.clear()
            self.current = None
            self.decoder.close()  # its FFmpeg threads go now, not when the session is collected

    def session_json(self) -> dict:
        return self.config.to_json(self.id, self.expires_at)

    # -- client events ----------------------------------------------------------------------
    async def receive_loop(self) -> None:
        while not self.closed:
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                text = message.get("bytes") or b""
            try:
                await self.handle(parse_event(text))
            except ProtocolError as exc:
                await self.send(error_event(exc))
            except Exception:  # a bug must not end the session silently, nor take the server down
                log.exception("realtime event failed")
                await self.send(error_event(ProtocolError(
                    "The server had an error while processing your event.", type="server_error", code="server_error")))

    async def handle(self, ev: dict) -> None:
        kind, event_id = ev["type"], ev.get("event_id")
        try:
            if kind == "input_audio_buffer.append":
                await self.append(decode_audio_field(ev))
            elif kind == "input_audio_buffer.commit":
                await self.commit()
            elif kind == "input_audio_buffer.clear":
                await self.clear()
            elif kind == "session.update":
                await self.update(ev.get("session"))
        except ProtocolError as exc:
            exc.event_id = exc.event_id or event_id
            raise

    async def update(self, session) -> None:
        if session is None:
            raise ProtocolError("Missing required parameter: 'session'.", param="session",
                                code="missing_required_parameter")
        new = apply_update(self.config, session, self.registry)
        old, self.config = self.config, new
        if new.format != old.format:
            self.decoder = LiveAudioDecoder(RAW_FORMATS[new.format])
        if new.turn_detection != old.turn_detection:
            # A new detector from here on; a turn being spoken stays in the buffer, uncommitted.
            self.current = None
            self.detector = TurnDetector(new.turn_detection, self.buffer.end) if new.turn_detection else None
            self.vad = StreamingVad()
        await self.send(event("session.updated", session=self.session_json()))

    async def append(self, raw: bytes) -> None:
        cap = int(self.settings.realtime.max_buffer_seconds * SAMPLE_RATE)
        if sum(t.samples.size for t in self.finals if t.samples is not None) > cap:
            # Audio sent much faster than it can be transcribed: refuse it rather than hold it all.
            raise ProtocolError(
                f"Transcription is more than {self.settings.realtime.max_buffer_seconds:g} s of audio behind; this "
                "audio was dropped. Send audio at real-time pace.", code="input_audio_buffer_full", param="audio")
        decoder, vad = self.decoder, (self.vad if self.detector else None)

        def convert():
            samples = decoder.decode(raw)
            return samples, (vad(samples) if vad is not None else None)

        samples, probs = await anyio.to_thread.run_sync(convert)
        if self.closed:
            return
        self.buffer.append(samples)
        if self.detector is None:
            if self.buffer.end - self.buffer.start > cap:
                self.buffer.drop_until(self.buffer.end - cap)
                await self.send(error_event(ProtocolError(
                    f"The input audio buffer holds more than {self.settings.realtime.max_buffer_seconds:g} s; "
                    "the oldest audio was dropped. Commit more often.", code="input_audio_buffer_full")))
            return
        for ev in self.detector.feed(probs, floor=self.buffer.start):
            if ev.kind == "start":
                await self.speech_started(ev.sample)
            else:
                await self.speech_stopped(ev.sample, ev.speech_end)
        turn = self.current
        if turn is not None:
            if self.buffer.end - turn.start >= cap:  # a turn that never pauses is cut at the cap
                self.detector.speaking = False
                await self.speech_stopped(self.buffer.end)
            else:
                self.wake.set()
        else:  # between turns keep only what a next turn's prefix padding could use
            keep = self.config.turn_detection.prefix_padding_ms * MS
            self.buffer.drop_until(self.buffer.end - keep)

    async def speech_started(self, sample: int) -> None:
        self.current = Turn(item_id=new_id("item"), start=sample, previous_item=self.last_item)
        await self.send(event("input_audio_buffer.speech_started", audio_start_ms=sample // MS,
                              item_id=self.current.item_id))

    async def speech_stopped(self, sample: int, speech_end: int | None = None) -> None:
        turn, self.current = self.current, None
        if turn is None:
            return
        turn.speech_end = speech_end
        await self.send(event("input_audio_buffer.speech_stopped", audio_end_ms=sample // MS, item_id=turn.item_id))
        await self.commit_turn(turn, sample)

    async def commit_turn(self, turn: Turn, end: int) -> None:
        turn.end, turn.ended_at = end, time.monotonic()
        turn.samples = self.buffer.take(turn.start, end)
        self.buffer.drop_until(end)
        await self.send(event("input_audio_buffer.committed", previous_item_id=self.last_item, item_id=turn.item_id))
        self.last_item = turn.item_id
        self.finals.append(turn)
        self.finals_ready.set()

    async def commit(self) -> None:
        if self.current is not None:  # server VAD mid-turn: the client ends the turn here
            turn, self.current = self.current, None
            self.detector.speaking = False
            await self.commit_turn(turn, self.buffer.end)
            return
        if self.buffer.end - self.buffer.start < MIN_COMMIT_MS * MS:
            raise ProtocolError(
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms of "
                f"audio, but buffer only has {self.buffer.seconds * 1000:.2f}ms of audio.",
                code="input_audio_buffer_commit_empty")
        await self.commit_turn(Turn(item_id=new_id("item"), start=self.buffer.start, live=False), self.buffer.end)

    async def clear(self) -> None:
        self.current = None
        if self.detector is not None:
            self.detector.speaking = False
        self.buffer.drop_until(self.buffer.end)
        await self.send(event("input_audio_buffer.cleared"))

    # -- decoding -----------------------------------------------------------------------------
    async def final_loop(self) -> None:
        """Committed turns, one at a time, in order."""
        while not self.closed:
            self.finals_ready.clear()
            if self.finals:
                await self.finish(self.finals.popleft())
                continue
            await self.finals_ready.wait()

    async def partial_loop(self) -> None:
        """Quick decodes of the turn being spoken. They run beside the final decodes (a turn that ends
        does not wait for a partial decode of it); a partial that returns after its turn's final
        decode started is dropped."""
        interval = int(self.settings.realtime.partial_interval_seconds * SAMPLE_RATE)
        while not self.closed:
            self.wake.clear()
            turn = self.current
            if turn is not None and self._early_final_due(turn) and self._pool_free():
                await self.early_final(turn)
                continue
            # No partial decode in a pause: it would hold the pool when the early final decode is due.
            if turn is not None and interval > 0 and self._pause(turn) is None and self._pool_free():
                length = self.buffer.end - turn.start
                if length - turn.partial_at >= interval and length <= PARTIAL_MAX_S * SAMPLE_RATE:
                    await self.partial(turn, length)
                    continue
            await self.wake.wait()

    def _pause(self, turn: Turn) -> int | None:
        """Where the silence the speaker is in began, when an early final decode would take it (else None)."""
        silence_from = self.detector.silence_from if self.detector is not None else None
        if (not self.settings.realtime.early_final_ms or silence_from is None or not turn.live
                or self.buffer.end - turn.start > PARTIAL_MAX_S * SAMPLE_RATE):
            return None
        return silence_from

    def _early_final_due(self, turn: Turn) -> bool:
        """The speaker has been silent for `early_final_ms` and this silence has no early decode yet."""
        silence_from = self._pause(turn)
        if silence_from is None or (turn.early is not None and turn.early.speech_end == silence_from):
            return False
        return self.buffer.end - silence_from >= self.settings.realtime.early_final_ms * MS

    def _pool_free(self) -> bool:
        """A partial decode may start: nobody waits, and it leaves a slot free for a final decode or a
        file request that comes meanwhile (with one slot per pool, it needs the pool idle)."""
        pool = self.registry.pool(self.config.model)
        limit = max(1, self.scheduler.max_concurrency - 1)
        return self.scheduler.running(pool) < limit and self.scheduler.queued(pool) == 0

    def _options(self, turn: Turn, final: bool) -> TranscribeOptions:
        committed = join(turn.agreement.committed)
        return TranscribeOptions(
            language=self.config.language,
            prompt=self._prompt(),
            token_logprobs=self.config.include_logprobs,
            # A server-VAD turn is speech already; a committed buffer may hold long silences.
            vad=None if turn.live else (VadParams() if self.settings.vad_by_default else None),
            prefix=committed or None,
            beam_size=None if final else 1,
            fallback=final,
            trim_padding=True,  # someone waits on every live decode (OYEZ_WHISPER__TRIMMED_ENCODE_MARGIN_S)
        )

    def _prompt(self) -> str | None:
        """The session's prompt, then the end of the turns transcribed so far, as Whisper takes the previous
        window's text: a turn decoded alone writes "10 of clubs" where its context says "ten of clubs"."""
        words = self.settings.realtime.context_words
        previous = " ".join(" ".join(self.history).split()[-words:]) if words else ""
        return " ".join(p for p in (self.config.prompt, previous) if p) or None

    async def _decode(self, model: str, samples: np.ndarray, options: TranscribeOptions) -> Transcript:
        """One decode with a scheduler slot and an engine lease held only while it runs, driven like
        every other decode (server/decoding.py: the request timeout, and the engine's stream closed)."""
        handle = self.service.state.catalogue.resolve(model)
        async with self.scheduler.slot(handle.pool, model):
            engine = await anyio.to_thread.run_sync(handle.acquire)
            try:
                decoding = Decoding(lambda: engine.transcribe(Audio(samples), options),
                                    self.settings.limits.request_timeout_seconds)
                transcript = await decoding.collect()
                assert transcript is not None  # no disconnect check: the session ends the task instead
                return transcript
            finally:
                handle.release()

    async def partial(self, turn: Turn, length: int) -> None:
        turn.partial_at = length
        samples = self.buffer.take(turn.start, turn.start + length)
        try:
            _, words = await self._decode_in_context(turn, samples, self._options(turn, final=False))
        except (APIError, EngineError) as exc:  # a refused or failed partial: the final decode will tell
            log.debug("partial decode skipped: %s", exc)
            return
        except Exception:
            log.exception("realtime partial decode failed")
            return
        if turn.final_started:  # too late: the final decode already took the words sent so far
            return
        new = turn.agreement.update(words)
        if new:
            await self.delta(turn, new)

    async def early_final(self, turn: Turn) -> None:
        """Start the turn's final decode in a silence that may end it; until the turn ends, wait for it here
        and use it as a partial decode."""
        samples = self.buffer.take(turn.start, self.buffer.end)
        task = asyncio.create_task(self._decode_final(turn, samples))
        if turn.early is not None:  # speech came back after the last one
            self.service.m_early.labels("superseded").inc()
        turn.early = EarlyFinal(speech_end=self.detector.silence_from, task=task)
        try:
            _, words = await asyncio.shield(task)
        except (APIError, EngineError) as exc:  # the final decode will try again
            log.debug("early final decode failed: %s", exc)
            return
        except asyncio.CancelledError:
            task.cancel()
            raise
        except Exception:
            log.exception("realtime early final decode failed")
            return
        if turn.final_started:  # the turn ended in this silence: finish() takes it from here
            return
        new = turn.agreement.update(words)
        if new:
            await self.delta(turn, new)

    async def _early_transcript(self, turn: Turn) -> tuple[Transcript, list[Word]] | None:
        """The early final decode's transcript and words, when it decoded this whole turn's speech."""
        early = turn.early
        if early is None or turn.speech_end is None or early.speech_end != turn.speech_end:
            if early is not None:
                self.service.m_early.labels("superseded").inc()
            return None
        try:
            transcript, words = await asyncio.shield(early.task)
        except asyncio.CancelledError:
            if not early.task.cancelled():
                raise  # this session is ending
            return None
        except Exception:  # logged where it ran; decode again
            return None
        self.service.m_early.labels("used").inc()
        # Usage counts the committed turn (live turns are decoded without VAD), of which the early decode
        # left out only trailing silence.
        seconds = turn.samples.size / SAMPLE_RATE
        return dataclasses.replace(transcript, audio=dataclasses.replace(
            transcript.audio, duration=seconds, speech_duration=seconds)), words

    async def _decode_final(self, turn: Turn, samples: np.ndarray) -> tuple[Transcript, list[Word]]:
        return await self._decode_in_context(turn, samples, self._options(turn, final=True))

    def _context_of(self, turn: Turn) -> TurnContext | None:
        """The previous turn's audio and text, for a server-VAD turn whose previous turn is transcribed (a partial
        decode may run before it is; a turn after a failed one has none)."""
        if not turn.live or turn.previous_item is None or turn.previous_item != self.context_item:
            return None
        return self.context

    async def _decode_in_context(self, turn: Turn, samples: np.ndarray,
                                 options: TranscribeOptions) -> tuple[Transcript, list[Word]]:
        """A decode of the turn's `samples`: its transcript and the turn's words. A server-VAD turn is decoded
        after the previous one's audio and forced text when they fit (engines/live_context.py); the words are then
        those after that text, and `usage` counts the turn's own audio. Partial and final decodes alike: a partial
        decode without the context sent words ("8 of spades") that the final decode in context writes otherwise."""
        context = self._context_of(turn)
        audio, prefix, used = in_context(context, samples, options.prefix)
        if not used:
            transcript = await self._decode(self.config.model, samples, options)
            return transcript, words_of(transcript)
        transcript = await self._decode(self.config.model, audio,
                                        dataclasses.replace(options, prefix=prefix, without_timestamps=True))
        words = after_context(context, words_of(transcript))
        if words is None:  # not expected (the context's text was forced): decode the turn alone
            log.warning("realtime: a decode in context did not start with the context's text; decoding alone")
            transcript = await self._decode(self.config.model, samples, options)
            return transcript, words_of(transcript)
        seconds = samples.size / SAMPLE_RATE
        return dataclasses.replace(transcript, audio=dataclasses.replace(
            transcript.audio, duration=seconds, speech_duration=seconds)), words

    async def delta(self, turn: Turn, words: list[Word]) -> None:
        text = join(words)
        if not text:
            return
        if turn.sent_any:
            text = " " + text
        else:
            self.service.m_first_delta.labels(self.config.model).observe(time.monotonic() - turn.started_at)
        turn.sent_any = True
        fields = {"item_id": turn.item_id, "content_index": 0, "delta": text}
        if self.config.include_logprobs:
            fields["logprobs"] = logprobs_json(words)
        await self.send(event("conversation.item.input_audio_transcription.delta", **fields))

    async def finish(self, turn: Turn) -> None:
        model = self.config.model
        turn.final_started = True
        try:
            decoded = await self._early_transcript(turn)
            if decoded is None:
                decoded = await self._decode_final(turn, turn.samples)
            transcript, final_words = decoded
        except (APIError, EngineError) as exc:
            err = exc if isinstance(exc, APIError) else from_engine_error(exc)
            self.service.m_turns.labels(model, "failed").inc()
            await self.send(event("conversation.item.input_audio_transcription.failed", item_id=turn.item_id,
                                  content_index=0, error={"type": err.type, "code": err.code, "message": err.message,
                                                          "param": err.param}))
            return
        except Exception:
            log.exception("realtime turn decode failed")
            self.service.m_turns.labels(model, "failed").inc()
            await self.send(event("conversation.item.input_audio_transcription.failed", item_id=turn.item_id,
                                  content_index=0, error={"type": "server_error", "code": "server_error",
                                                          "message": "The turn could not be transcribed.", "param": None}))
            return
        rest = turn.agreement.finish(final_words)
        await self.delta(turn, rest)
        words = turn.agreement.committed
        self.history.append(join(words))
        self.context = (previous_turn(turn.samples, join(words), self.settings.realtime.context_audio_seconds)
                        if turn.live else None)
        self.context_item = turn.item_id
        fields = {"item_id": turn.item_id, "content_index": 0, "transcript": join(words),
                  "usage": usage_for(capabilities_of(model), transcript)}
        if self.config.include_logprobs:
            fields["logprobs"] = logprobs_json(words)
        await self.send(event("conversation.item.input_audio_transcription.completed", **fields))
        self.service.m_turns.labels(model, "completed").inc()
        self.service.m_latency.labels(model).observe(time.monotonic() - turn.ended_at)
        turn.samples = None

