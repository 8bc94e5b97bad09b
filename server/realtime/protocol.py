"""The wire format of a Realtime transcription session: client events in, server events out.

Shapes follow the `openai` package's `openai/types/realtime/` (session.update with
`session.type = "transcription"`, input_audio_buffer.*, conversation.item.input_audio_transcription.*,
error). Client events are validated here with pydantic; every problem becomes a ProtocolError, which
the session answers with an `error` event carrying the client's `event_id`, and goes on.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engines.languages import LANGUAGES
from engines.streaming_vad import TurnParams

CLIENT_EVENTS = (
    "session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
)
FORMATS = ("audio/pcm", "audio/pcmu", "audio/pcma")
LOGPROBS = "item.input_audio_transcription.logprobs"
MIN_COMMIT_MS = 100  # OpenAI refuses to commit less audio than this


class ProtocolError(Exception):
    """A client event the session refuses; answered with an `error` event."""

    def __init__(self, message: str, *, code: str = "invalid_value", param: str | None = None,
                 type: str = "invalid_request_error", event_id: str | None = None):
        super().__init__(message)
        self.message, self.code, self.param, self.type, self.event_id = message, code, param, type, event_id


def new_id(prefix: str) -> str:
    """OpenAI-style ids (`event_...`, `item_...`, `sess_...`): a prefix and 22 random characters."""
    return f"{prefix}_{secrets.token_urlsafe(16)[:22]}"


# -- configuration ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SessionConfig:
    """The effective configuration of one session (what session.created / session.updated show)."""

    model: str
    format: str = "audio/pcm"
    language: str | None = None
    prompt: str | None = None
    turn_detection: TurnParams | None = field(default_factory=TurnParams)
    noise_reduction: dict | None = None
    include_logprobs: bool = False

    def to_json(self, session_id: str, expires_at: int) -> dict:
        fmt: dict[str, Any] = {"type": self.format}
        if self.format == "audio/pcm":
            fmt["rate"] = 24000
        turn = None
        if self.turn_detection is not None:
            t = self.turn_detection
            turn = {"type": "server_vad", "threshold": t.threshold, "prefix_padding_ms": t.prefix_padding_ms,
                    "silence_duration_ms": t.silence_duration_ms}
        return {
            "type": "transcription",
            "id": session_id,
            "object": "realtime.transcription_session",
            "expires_at": expires_at,
            "audio": {"input": {
                "format": fmt,
                "noise_reduction": self.noise_reduction,
                "transcription": {"model": self.model, "language": self.language, "prompt": self.prompt},
                "turn_detection": turn,
            }},
            "include": [LOGPROBS] if self.include_logprobs else [],
        }


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Format(_Strict):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
    rate: Literal[24000] | None = None


class _Transcription(_Strict):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    # Accepted for compatibility with OpenAI's newer models; not used by Whisper.
    delay: Literal["minimal", "low", "medium", "high", "xhigh"] | None = None
    keywords: list[str] | None = None
    languages: list[str] | None = None


class _ServerVad(_Strict):
    type: Literal["server_vad"]
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    prefix_padding_ms: int | None = Field(None, ge=0, le=10_000)
    silence_duration_ms: int | None = Field(None, ge=0, le=60_000)
    # Conversation-session knobs (no responses here): accepted and ignored.
    create_response: bool | None = None
    interrupt_response: bool | None = None
    idle_timeout_ms: int | None = None


class _NoiseReduction(_Strict):
    type: Literal["near_field", "far_field"] | None = None
    strength: float | None = Field(None, ge=0.0)


class _AudioInput(_Strict):
    format: _Format | None = None
    noise_reduction: _NoiseReduction | None = None
    transcription: _Transcription | None = None
    turn_detection: dict | None = None


class _Audio(_Strict):
    input: _AudioInput | None = None


class _Session(_Strict):
    type: Literal["transcription"]
    audio: _Audio | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None


def apply_update(config: SessionConfig, session: Any, models) -> SessionConfig:
    """The configuration after a `session.update`'s `session` object; ProtocolError when invalid.

    Only fields present change; `null` clears a nullable one (turn_detection null = the client commits).
    `models` is the model registry: the transcription model must be one of its speech models.
    """
    if isinstance(session, dict) and session.get("type") == "realtime":
        raise ProtocolError(
            "This is a transcription session (connect with ?intent=transcription); `session.type` must be `transcription`.",
            param="session.type",
        )
    try:
        parsed = _Session.model_validate(session)
    except ValidationError as exc:
        raise _from_validation(exc, "session") from None
    audio_in = parsed.audio.input if parsed.audio and parsed.audio.input else None
    changes: dict[str, Any] = {}
    if parsed.include is not None:
        changes["include_logprobs"] = LOGPROBS in parsed.include
    if audio_in is not None:
        present = audio_in.model_fields_set
        if "format" in present:
            if audio_in.format is None:
                raise ProtocolError("`session.audio.input.format` cannot be null.", param="session.audio.input.format")
            changes["format"] = audio_in.format.type
        if "noise_reduction" in present:
            nr = audio_in.noise_reduction
            changes["noise_reduction"] = None if nr is None else {"type": nr.type or "near_field", "strength": 1.0 if nr.strength is None else nr.strength}
        if "turn_detection" in present:
            changes["turn_detection"] = _turn_detection(audio_in.turn_detection)
        if "transcription" in present and audio_in.transcription is not None:
            t = audio_in.transcription
            given = t.model_fields_set
            if "model" in given and t.model is not None:
                changes["model"] = _check_model(t.model, models)
            if "language" in given:
                lang = (t.language or "").strip().lower() or None
                if lang is not None and lang not in LANGUAGES:
                    raise ProtocolError(f"Language {t.language!r} is not supported; use an ISO-639-1 code such as `en`.",
                                        param="session.audio.input.transcription.language")
                changes["language"] = lang
            if "prompt" in given:
                changes["prompt"] = t.prompt or None
    return replace(config, **changes)


def _check_model(name: str, models) -> str:
    param = "session.audio.input.transcription.model"
    try:
        spec = models.spec(name)
    except Exception:
        raise ProtocolError(f"The model `{name}` does not exist or you do not have access to it.",
                            param=param, code="model_not_found") from None
    if spec.kind != "speech":
        raise ProtocolError(
            f"The model `{name}` cannot transcribe live: speaker diarization needs the whole recording. "
            "Use it with POST /v1/audio/transcriptions, or pick a speech model here.",
            param=param, code="model_not_available",
        )
    return name


def _turn_detection(raw: dict | None) -> TurnParams | None:
    param = "session.audio.input.turn_detection"
    if raw is None:
        return None
    if raw.get("type") == "semantic_vad":
        raise ProtocolError("`semantic_vad` is not supported by this server; use `server_vad` or null.",
                            param=f"{param}.type", code="unsupported_value")
    try:
        vad = _ServerVad.model_validate(raw)
    except ValidationError as exc:
        raise _from_validation(exc, param) from None
    defaults = TurnParams()
    return TurnParams(
        threshold=defaults.threshold if vad.threshold is None else vad.threshold,
        prefix_padding_ms=defaults.prefix_padding_ms if vad.prefix_padding_ms is None else vad.prefix_padding_ms,
        silence_duration_ms=defaults.silence_duration_ms if vad.silence_duration_ms is None else vad.silence_duration_ms,
    )


def _from_validation(exc: ValidationError, root: str) -> ProtocolError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    param = f"{root}.{loc}" if loc else root
    if err["type"] == "extra_forbidden":
        return ProtocolError(f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter")
    if err["type"] == "missing":
        return ProtocolError(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    return ProtocolError(f"Invalid value for '{param}': {err['msg']}.", param=param, code="invalid_value")


# -- client events ----------------------------------------------------------------------------

def parse_event(text: str | bytes) -> dict:
    """One client message -> its event object (a dict with a known `type`); ProtocolError otherwise."""
    try:
        event = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProtocolError("The server had trouble parsing your JSON: the message is not valid JSON.",
                            code="invalid_json") from None
    if not isinstance(event, dict):
        raise ProtocolError("A client event must be a JSON object.", code="invalid_json")
    event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
    kind = event.get("type")
    if kind is None:
        raise ProtocolError("Missing required parameter: 'type'.", param="type", code="missing_required_parameter",
                            event_id=event_id)
    if kind not in CLIENT_EVENTS:
        raise ProtocolError(
            f"Invalid value: {str(kind)[:100]!r}. Supported values in a transcription session are: "
            + ", ".join(f"'{k}'" for k in CLIENT_EVENTS) + ".",
            param="type", event_id=event_id,
        )
    return event


def decode_audio_field(event: dict) -> bytes:
    """The `audio` of an input_audio_buffer.append: base64 -> bytes, or ProtocolError."""
    audio = event.get("audio")
    if not isinstance(audio, str):
        raise ProtocolError("Missing required parameter: 'audio' (base64-encoded audio bytes).", param="audio",
                            code="missing_required_parameter", event_id=event.get("event_id"))
    try:
        return base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("Invalid 'audio'. Expected base64-encoded audio bytes but got an invalid value.",
                            param="audio", event_id=event.get("event_id")) from None


# -- server events ----------------------------------------------------------------------------

def event(kind: str, **fields) -> dict:
    return {"type": kind, "event_id": new_id("event"), **fields}


def error_event(exc: ProtocolError) -> dict:
    return event("error", error={"type": exc.type, "code": exc.code, "message": exc.message, "param": exc.param,
                                 "event_id": exc.event_id})


def logprobs_json(words) -> list[dict] | None:
    return [{"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.bytes)} for w in words for lp in w.logprobs]
