"""The models this server answers to: OpenAI's public names, what each one can do, and how it is billed.

One table (CAPABILITIES) decides which response formats and request fields a model accepts,
whether its output is diarized, and whether usage is reported in tokens or seconds; validation
(server/validation.py), rendering (server/render.py) and streaming (server/streaming.py) read it
and nothing else. A request resolves its model name once, into a ModelHandle.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from engines.registry import EngineLease, ModelRegistry, ModelSpec
from engines.types import Engine

SPEECH_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
DIARIZED_FORMATS = ("json", "text", "diarized_json", "srt", "vtt")


@dataclass(frozen=True)
class Capabilities:
    """What a model accepts and how its answers are shaped."""

    kind: Literal["speech", "diarize"]  # which engine serves it (engines/registry.py loaders)
    response_formats: tuple[str, ...]
    translation: bool = True  # served on /v1/audio/translations
    prompt: bool = True
    logprobs: bool = True  # include[]=logprobs
    streaming: bool = True
    diarized: bool = False  # speaker-labelled segments, diarized_json, known speakers
    billing: Literal["tokens", "duration"] = "duration"  # the `usage` object of json responses


# Oyez serves every public name with local weights and gives each one the superset of what
# OpenAI documents where it costs nothing to (e.g. verbose_json and logprobs on every speech model);
# where OpenAI documents a refusal, the table refuses too (the diarize model's fields).
WHISPER = Capabilities(kind="speech", response_formats=SPEECH_FORMATS, billing="duration")
GPT_4O = Capabilities(kind="speech", response_formats=SPEECH_FORMATS, billing="tokens")
DIARIZE = Capabilities(
    kind="diarize", response_formats=DIARIZED_FORMATS, translation=False, prompt=False, logprobs=False,
    diarized=True, billing="duration",  # OpenAI bills the diarize model by duration, like whisper-1
)

CAPABILITIES: dict[str, Capabilities] = {
    "whisper-1": WHISPER,
    "gpt-4o-transcribe": GPT_4O,
    "gpt-4o-mini-transcribe": GPT_4O,
    "gpt-4o-mini-transcribe-2025-12-15": GPT_4O,
    "gpt-4o-transcribe-diarize": DIARIZE,
}
PUBLIC_MODELS = tuple(name for name, caps in CAPABILITIES.items() if caps.kind == "speech")
DIARIZE_MODEL = "gpt-4o-transcribe-diarize"


def model_specs(default_weights: str, extra: dict[str, str] | None = None) -> dict[str, ModelSpec]:
    """Every public name on the default weights, plus the operator's extra or overridden names."""
    created = int(time.time())
    specs = {name: ModelSpec(name, default_weights, kind=caps.kind, created=created) for name, caps in CAPABILITIES.items()}
    for name, weights in (extra or {}).items():
        kind = CAPABILITIES[name].kind if name in CAPABILITIES else "speech"
        specs[name] = ModelSpec(name, weights, kind=kind, created=created)
    return specs


def capabilities_of(name: str) -> Capabilities:
    """A public name's row of the table; names the operator added are Whisper models."""
    return CAPABILITIES.get(name, WHISPER)


@dataclass
class ModelHandle:
    """One request's model, resolved once: its name, capabilities, pool and engine lease."""

    id: str
    capabilities: Capabilities
    lease: EngineLease

    @property
    def pool(self) -> str:
        return self.lease.pool

    def acquire(self) -> Engine:
        """Load if needed and lease the engine (blocking; call off the event loop)."""
        return self.lease.acquire()

    def release(self) -> None:
        self.lease.release()


class Catalogue:
    """Resolves model names for requests and lists them for /v1/models."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def resolve(self, name: str) -> ModelHandle:
        """The handle for `name`; ModelNotFoundError (404) when this server has no such model."""
        lease = self.registry.resolve(name)
        return ModelHandle(id=lease.spec.id, capabilities=capabilities_of(name), lease=lease)

    def describe(self, name: str) -> dict:
        spec = self.registry.spec(name)
        return {"id": spec.id, "object": "model", "created": spec.created, "owned_by": "oyez",
                "loaded": self.registry.is_loaded(name)}

    def list(self) -> dict:
        return {"object": "list", "data": [self.describe(name) for name in self.registry.ids()]}
