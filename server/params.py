"""Parse multipart forms exactly as OpenAI's SDKs send them into typed, validated requests.

The Python SDK sends arrays as repeated `name[]` keys and objects as `name[key]`
sub-keys; other clients send bare `name`, indexed `name[0]`, or a JSON string.
All of them are accepted. Every problem is a 400 naming the field at fault.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Literal

from starlette.datastructures import FormData, UploadFile

from engines.languages import LANGUAGES
from engines.types import VadParams
from server.errors import APIError, invalid

TRANSCRIPTION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
TRANSLATION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES = ("word", "segment")
INCLUDES = ("logprobs",)

# OpenAI's documented server_vad defaults.
SERVER_VAD_DEFAULTS = VadParams(threshold=0.5, speech_pad_ms=300, min_silence_duration_ms=200)

_KEY = re.compile(r"^(?P<name>[A-Za-z_]+)(?:\[(?P<sub>[^\]]*)\])?$")


@dataclass(frozen=True)
class Chunking:
    """`chunking_strategy`: absent (server default), "auto", or server_vad with its knobs."""

    kind: Literal["default", "auto", "server_vad"] = "default"
    vad: VadParams | None = None


MAX_SPEAKERS = 32  # bound on num_speakers / min_speakers / max_speakers


@dataclass(frozen=True)
class SpeakerBounds:
    """Oyez extension (not OpenAI's): `num_speakers`, or `min_speakers`/`max_speakers`, for the diarize model."""

    num: int | None = None
    min: int | None = None
    max: int | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.num, self.min, self.max))


@dataclass(frozen=True)
class TranscriptionRequest:
    file: UploadFile
    model: str
    task: Literal["transcribe", "translate"] = "transcribe"
    language: str | None = None
    prompt: str | None = None
    response_format: str = "json"
    temperature: float = 0.0
    include_logprobs: bool = False
    granularities: frozenset[str] = frozenset({"segment"})
    granularities_given: bool = False  # timestamp_granularities was sent (only verbose_json takes it)
    stream: bool = False
    chunking: Chunking = Chunking()
    vad: bool | None = None  # Oyez's `vad` field: None = not sent (the server default or chunking_strategy)
    known_speaker_names: list[str] = field(default_factory=list)
    known_speaker_references: list[str] = field(default_factory=list)
    speakers: SpeakerBounds = SpeakerBounds()


class _Form:
    """Groups form items by field name: plain, `name[]`, `name[0]` and `name[key]` spellings."""

    def __init__(self, form: FormData):
        self.scalars: dict[str, list[str | UploadFile]] = {}
        self.subkeys: dict[str, dict[str, str | UploadFile]] = {}
        for key, value in form.multi_items():
            m = _KEY.match(key)
            if not m:
                continue  # unknown spellings are ignored, like unknown fields
            name, sub = m.group("name"), m.group("sub")
            if sub is None or sub == "" or sub.isdigit():
                self.scalars.setdefault(name, []).append(value)
            else:
                self.subkeys.setdefault(name, {})[sub] = value

    def text(self, name: str) -> str | None:
        values = self.scalars.get(name)
        if not values:
            return None
        value = values[-1]
        if not isinstance(value, str):
            raise invalid(name, f"`{name}` must be a text field, not a file.")
        return value

    def texts(self, name: str) -> list[str]:
        out = []
        for value in self.scalars.get(name, []):
            if not isinstance(value, str):
                raise invalid(name, f"`{name}` must be text fields, not files.")
            out.append(value)
        return out


def parse_transcription(form: FormData, task: Literal["transcribe", "translate"] = "transcribe") -> TranscriptionRequest:
    f = _Form(form)
    uploads = f.scalars.get("file") or []
    upload = uploads[-1] if uploads else None
    if upload is None:
        raise APIError(400, "You must provide a `file` with the audio to transcribe.", param="file",
                       code="missing_required_parameter")
    if not isinstance(upload, UploadFile):
        raise invalid("file", "`file` must be an uploaded audio file (multipart file part), not a text field.")

    model = (f.text("model") or "").strip()
    if not model:
        raise APIError(400, "You must provide a `model` parameter.", param="model", code="missing_required_parameter")

    formats = TRANSCRIPTION_FORMATS if task == "transcribe" else TRANSLATION_FORMATS
    response_format = (f.text("response_format") or "json").strip()
    if response_format not in formats:
        raise invalid("response_format", f"`response_format` must be one of {', '.join(formats)}; got {response_format!r}.")

    language = None
    if task == "transcribe":
        language = (f.text("language") or "").strip().lower() or None
        if language is not None and language not in LANGUAGES:
            raise invalid("language", f"Language {language!r} is not supported; use an ISO-639-1 code such as `en`.")

    prompt = f.text("prompt")
    prompt = prompt if prompt and prompt.strip() else None

    temperature = _temperature(f.text("temperature"))

    include = [v.strip() for v in f.texts("include") if v.strip()]
    for value in include:
        if value not in INCLUDES:
            raise invalid("include", f"`include` values must be one of {', '.join(INCLUDES)}; got {value!r}.")

    granularities = [v.strip() for v in f.texts("timestamp_granularities") if v.strip()]
    for value in granularities:
        if value not in GRANULARITIES:
            raise invalid("timestamp_granularities",
                          f"`timestamp_granularities` values must be `word` or `segment`; got {value!r}.")

    names = [n.strip() for n in f.texts("known_speaker_names")]
    references = f.texts("known_speaker_references")

    return TranscriptionRequest(
        file=upload,
        model=model,
        task=task,
        language=language,
        prompt=prompt,
        response_format=response_format,
        temperature=temperature,
        include_logprobs="logprobs" in include,
        granularities=frozenset(granularities or ["segment"]),
        granularities_given=bool(granularities),
        stream=_boolean("stream", f.text("stream")),
        chunking=_chunking(f),
        vad=_optional_boolean("vad", f.text("vad")),
        known_speaker_names=names,
        known_speaker_references=references,
        speakers=_speaker_bounds(f),
    )


def _speaker_bounds(f: _Form) -> SpeakerBounds:
    values = {}
    for name in ("num_speakers", "min_speakers", "max_speakers"):
        raw = (f.text(name) or "").strip()
        if not raw:
            continue
        try:
            value = int(raw)
        except ValueError:
            raise invalid(name, f"`{name}` must be an integer; got {raw!r}.") from None
        if not 1 <= value <= MAX_SPEAKERS:
            raise invalid(name, f"`{name}` must be between 1 and {MAX_SPEAKERS}; got {value}.")
        values[name] = value
    bounds = SpeakerBounds(values.get("num_speakers"), values.get("min_speakers"), values.get("max_speakers"))
    if bounds.min is not None and bounds.max is not None and bounds.min > bounds.max:
        raise invalid("min_speakers", f"`min_speakers` ({bounds.min}) must not exceed `max_speakers` ({bounds.max}).")
    if bounds.num is not None and not (bounds.min or 1) <= bounds.num <= (bounds.max or MAX_SPEAKERS):
        raise invalid("num_speakers", f"`num_speakers` ({bounds.num}) must lie within `min_speakers` and `max_speakers`.")
    return bounds


def _temperature(raw: str | None) -> float:
    if raw is None or not raw.strip():
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise invalid("temperature", f"`temperature` must be a number between 0 and 1; got {raw!r}.") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise invalid("temperature", f"`temperature` must be between 0 and 1; got {raw!r}.")
    return value


def _boolean(name: str, raw: str | None) -> bool:
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off", "", "null", "none"):
        return False
    raise invalid(name, f"`{name}` must be true or false; got {raw!r}.")


def _optional_boolean(name: str, raw: str | None) -> bool | None:
    return None if raw is None or not raw.strip() else _boolean(name, raw)


def _chunking(f: _Form) -> Chunking:
    param = "chunking_strategy"
    raw_obj: dict | None = None
    if param in f.subkeys:
        raw_obj = {k: v for k, v in f.subkeys[param].items()}
        for k, v in raw_obj.items():
            if not isinstance(v, str):
                raise invalid(param, f"`{param}[{k}]` must be a text field.")
    else:
        raw = f.text(param)
        if raw is None or raw.strip().lower() in ("", "null", "none"):
            return Chunking()
        raw = raw.strip()
        if raw == "auto":
            return Chunking(kind="auto", vad=VadParams())
        if raw.startswith("{"):
            try:
                raw_obj = json.loads(raw)
            except json.JSONDecodeError:
                raise invalid(param, "`chunking_strategy` is not valid JSON.") from None
            if not isinstance(raw_obj, dict):
                raise invalid(param, "`chunking_strategy` must be \"auto\" or an object.")
        else:
            raise invalid(param, f"`chunking_strategy` must be \"auto\" or a server_vad object; got {raw!r}.")

    kind = raw_obj.get("type")
    if kind == "auto":
        return Chunking(kind="auto", vad=VadParams())
    if kind != "server_vad":
        raise invalid(param, f"`chunking_strategy.type` must be `server_vad` (or the string \"auto\"); got {kind!r}.")
    unknown = set(raw_obj) - {"type", "threshold", "prefix_padding_ms", "silence_duration_ms"}
    if unknown:
        raise invalid(param, f"Unknown `chunking_strategy` field(s): {', '.join(sorted(unknown))}.")
    d = SERVER_VAD_DEFAULTS
    threshold = _number(raw_obj.get("threshold"), d.threshold, 0.0, 1.0, "threshold", float)
    pad = _number(raw_obj.get("prefix_padding_ms"), d.speech_pad_ms, 0, 10_000, "prefix_padding_ms", int)
    silence = _number(raw_obj.get("silence_duration_ms"), d.min_silence_duration_ms, 0, 60_000, "silence_duration_ms", int)
    return Chunking(kind="server_vad", vad=VadParams(threshold=threshold, speech_pad_ms=pad, min_silence_duration_ms=silence))


def _number(raw, default, low, high, name: str, kind):
    param = "chunking_strategy"
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    try:
        value = float(raw)
        if kind is int:
            if not value.is_integer():
                raise ValueError
            value = int(value)
    except (TypeError, ValueError):
        raise invalid(param, f"`chunking_strategy.{name}` must be a{'n integer' if kind is int else ' number'}; got {raw!r}.") from None
    if not (low <= value <= high):
        raise invalid(param, f"`chunking_strategy.{name}` must be between {low} and {high}; got {raw!r}.")
    return value
