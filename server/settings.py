"""Server settings, nested by concern and read from OYEZ_* environment variables.

Each group is one object passed as it is to what uses it: `whisper` and `diarization` are the
engines' own config models (engines/config.py), `scheduler` and `limits` are read by the server.
A nested value is set with a double underscore (`OYEZ_WHISPER__BEAM_SIZE=1`); every flat name
documented before the nesting (`OYEZ_BEAM_SIZE`) still works, through FLAT_ALIASES.
docs/configuration.md is generated from these classes (`python -m server.settings`), and a test
checks it is current.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from engines.config import DiarizerConfig, WhisperConfig

PREFIX = "OYEZ_"


class SchedulerSettings(BaseModel):
    """Admission control and model lifecycle (server/scheduler.py, engines/registry.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_concurrency: int = Field(
        0, description="Requests decoding at once per loaded model; 0 = auto: one per replica on CPU, 64 on CUDA with "
        "batching across requests (engines/parallelism.py)."
    )
    max_queue: int = Field(16, description="Requests waiting per loaded model; past it, 429 with Retry-After.")
    model_idle_seconds: float = Field(0.0, description="Unload a model unused this long; 0 = never.")
    max_loaded_models: int = Field(0, description="Most models resident at once (least recently used goes); 0 = no cap.")


class LimitSettings(BaseModel):
    """What one request may send and take (server/limits.py, server/known_speakers.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_upload_mb: float = Field(25.0, description="Largest accepted upload, 413 past it (OpenAI's limit is 25 MB).")
    max_audio_seconds: float = Field(4 * 3600.0, description="Longest accepted audio after decoding (400 past it).")
    max_form_fields: int = Field(1000, description="Most form fields per request (400 past it).")
    max_speaker_references: int = Field(4, description="Most known_speaker_names / known_speaker_references.")
    max_reference_mb: float = Field(5.0, description="Largest decoded known_speaker_references audio, per reference.")
    body_timeout_seconds: float = Field(120.0, description="The whole upload must arrive within this (408 past it).")
    request_timeout_seconds: float = Field(
        1800.0, description="Wall time of one decode, streamed or not: it stops at the next segment past it (504, or "
        "an `error` event on a stream)."
    )

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_reference_bytes(self) -> int:
        return int(self.max_reference_mb * 1024 * 1024)


class RealtimeSettings(BaseModel):
    """Live transcription sessions over WebSocket (/v1/realtime; server/realtime/)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_sessions: int = Field(
        32, ge=0, description="Realtime sessions open at once; past it a new one gets a rate_limit_exceeded error and is closed."
    )
    max_session_seconds: float = Field(
        3600.0, gt=0, description="A realtime session is closed (error `session_expired`) after this long, as OpenAI's are after 60 min."
    )
    partial_interval_seconds: float = Field(
        1.0, ge=0, description="Decode a turn still being spoken every this many seconds of new audio, for text before "
        "the turn ends (0 = text only at the end of each turn)."
    )
    context_words: int = Field(
        0, ge=0, description="Decode a turn after the session's prompt and the last this many words of the session's "
        "earlier turns, as Whisper conditions a window on the previous one (0 = the prompt alone; off by default: "
        "on short turns it made Whisper repeat the context, docs/realtime.md)."
    )
    context_audio_seconds: float = Field(
        10.0, ge=0, description="Decode a server-VAD turn after the previous turn's audio, with that turn's "
        "transcript forced as the start of the text, when the previous turn is at most this long (its words are "
        "not sent again; 0 = each turn decoded alone; engines/live_context.py)."
    )
    early_final_ms: int = Field(
        0, ge=0, description="Start a turn's final decode once the speaker has been silent this long, before "
        "silence_duration_ms confirms the turn's end (kept if no speech comes back; 0 = start it at speech_stopped: "
        "off by default, since the shorter audio cost words, docs/realtime.md)."
    )
    max_buffer_seconds: float = Field(
        300.0, gt=0, description="Most uncommitted audio a realtime session holds: a longer server-VAD turn is cut "
        "there; with turn_detection null the oldest audio is dropped, with an error event."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, env_nested_delimiter="__", extra="ignore")

    host: str = Field("127.0.0.1", description="Address to bind (the Docker image sets 0.0.0.0).")
    port: int = Field(8000, description="Port to bind.")
    log_level: str = Field("info", description="debug, info, warning, error.")
    log_format: str = Field(
        "text", description="text or json (every line, uvicorn's too): one structured line per request either way."
    )

    # Models
    models: dict[str, str] = Field(
        default_factory=dict,
        description='JSON object of extra or overridden model names -> weights, e.g. {"whisper-1": "/models/large-v3"}.',
    )
    preload: list[str] = Field(
        default_factory=lambda: ["whisper-1"], description="Model names loaded at start; /ready answers 503 until they are."
    )
    whisper: WhisperConfig = Field(default_factory=WhisperConfig)
    diarization: DiarizerConfig = Field(default_factory=DiarizerConfig)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    realtime: RealtimeSettings = Field(default_factory=RealtimeSettings)

    # Requests
    vad_by_default: bool = Field(
        True, description="Voice-activity detection when the request sets neither chunking_strategy nor vad."
    )
    sse_keepalive_seconds: float = Field(10.0, description="Keep-alive comment interval on streams with no text.")
    shutdown_timeout_seconds: float = Field(30.0, description="On SIGTERM, how long in-flight requests may finish.")

    # Security (server/auth.py)
    api_keys: str = Field("", description="API keys, comma-separated or a JSON list; empty = no authentication.")
    api_keys_file: Path | None = Field(
        None, description="File of API keys, one a line (# comments), added to OYEZ_API_KEYS. With no key at all the "
        "server warns at start."
    )

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        # Nested variables win over the flat aliases; both lose to explicit arguments.
        return init_settings, env_settings, FlatAliasSource(settings_cls), dotenv_settings, file_secret_settings


# The flat names documented before settings were nested, and where each now lives.
FLAT_ALIASES: dict[str, tuple[str, str]] = {
    "OYEZ_DEFAULT_WEIGHTS": ("whisper", "default_weights"),
    "OYEZ_CACHE_DIR": ("whisper", "cache_dir"),
    "OYEZ_ALLOW_DOWNLOADS": ("whisper", "allow_downloads"),
    "OYEZ_DEVICE": ("whisper", "device"),
    "OYEZ_COMPUTE_TYPE": ("whisper", "compute_type"),
    "OYEZ_CPU_THREADS": ("whisper", "cpu_threads"),
    "OYEZ_NUM_WORKERS": ("whisper", "num_workers"),
    "OYEZ_BEAM_SIZE": ("whisper", "beam_size"),
    "OYEZ_BATCH_SIZE": ("whisper", "batch_size"),
    "OYEZ_MAX_BATCH": ("whisper", "max_batch"),
    "OYEZ_SOLO_REPLICA": ("whisper", "solo_replica"),
    "OYEZ_WINDOW_SECONDS": ("whisper", "window_seconds"),
    "OYEZ_COVERAGE_REDECODE": ("whisper", "coverage_redecode"),
    "OYEZ_DIARIZATION_PIPELINE": ("diarization", "pipeline"),
    "OYEZ_HF_TOKEN": ("diarization", "hf_token"),
    "OYEZ_DIARIZATION_THREADS": ("diarization", "threads"),
    "OYEZ_DIARIZATION_CLUSTERING": ("diarization", "clustering"),
    "OYEZ_DIARIZATION_THRESHOLD": ("diarization", "clustering_threshold"),
    "OYEZ_DIARIZATION_MIN_CLUSTER_SIZE": ("diarization", "min_cluster_size"),
    "OYEZ_DIARIZATION_STEP": ("diarization", "segmentation_step"),
    "OYEZ_DIARIZATION_VOICE_SPLIT": ("diarization", "voice_split_threshold"),
    "OYEZ_DIARIZATION_EDGE_EXTENSION_SECONDS": ("diarization", "edge_extension_s"),
    "OYEZ_SPEAKER_MATCH_THRESHOLD": ("diarization", "match_threshold"),
    "OYEZ_SPEAKER_MATCH_FLOOR": ("diarization", "match_floor"),
    "OYEZ_MAX_CONCURRENCY": ("scheduler", "max_concurrency"),
    "OYEZ_MAX_QUEUE": ("scheduler", "max_queue"),
    "OYEZ_MODEL_IDLE_SECONDS": ("scheduler", "model_idle_seconds"),
    "OYEZ_MAX_LOADED_MODELS": ("scheduler", "max_loaded_models"),
    "OYEZ_MAX_UPLOAD_MB": ("limits", "max_upload_mb"),
    "OYEZ_MAX_AUDIO_SECONDS": ("limits", "max_audio_seconds"),
    "OYEZ_MAX_FORM_FIELDS": ("limits", "max_form_fields"),
    "OYEZ_MAX_SPEAKER_REFERENCES": ("limits", "max_speaker_references"),
    "OYEZ_MAX_REFERENCE_MB": ("limits", "max_reference_mb"),
    "OYEZ_BODY_TIMEOUT_SECONDS": ("limits", "body_timeout_seconds"),
    "OYEZ_REQUEST_TIMEOUT_SECONDS": ("limits", "request_timeout_seconds"),
    "OYEZ_MAX_REALTIME_SESSIONS": ("realtime", "max_sessions"),
    "OYEZ_REALTIME_MAX_SESSION_SECONDS": ("realtime", "max_session_seconds"),
    "OYEZ_REALTIME_PARTIAL_INTERVAL_SECONDS": ("realtime", "partial_interval_seconds"),
    "OYEZ_REALTIME_MAX_BUFFER_SECONDS": ("realtime", "max_buffer_seconds"),
    "OYEZ_REALTIME_EARLY_FINAL_MS": ("realtime", "early_final_ms"),
    "OYEZ_REALTIME_CONTEXT_WORDS": ("realtime", "context_words"),
    "OYEZ_REALTIME_CONTEXT_AUDIO_SECONDS": ("realtime", "context_audio_seconds"),
}


class FlatAliasSource(PydanticBaseSettingsSource):
    """Reads the flat OYEZ_* names of FLAT_ALIASES into their nested places."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the aliases directly

    def __call__(self) -> dict[str, Any]:
        out: dict[str, dict[str, Any]] = {}
        environ = {k.upper(): v for k, v in os.environ.items()}
        for name, (group, field) in FLAT_ALIASES.items():
            if name in environ:
                out.setdefault(group, {})[field] = environ[name]
        return out


CONFIGURATION_DOC_HEAD = """# Configuration

Every setting is an environment variable (or a constructor argument of `server.settings.Settings`).
Settings are nested by concern: `OYEZ_WHISPER__*` (the speech engine), `OYEZ_DIARIZATION__*`, `OYEZ_SCHEDULER__*`
(admission and model lifecycle), `OYEZ_LIMITS__*` (what one request may send and take), `OYEZ_REALTIME__*` (live sessions). A group can also be set
at once as JSON, e.g. `OYEZ_WHISPER='{"beam_size": 1, "device": "cpu"}'`. The flat names documented before the
nesting (second column) still work; when both are set, the nested name wins.

This table is generated from the code (`python -m server.settings`) and a test checks it is current.

"""


def configuration_doc() -> str:
    return CONFIGURATION_DOC_HEAD + configuration_table()


def environment_names() -> set[str]:
    """Every variable the settings read: top-level names, groups (as JSON), nested names and flat aliases."""
    names = set(FLAT_ALIASES)
    for name, field in Settings.model_fields.items():
        names.add(f"{PREFIX}{name.upper()}")
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            names |= {f"{PREFIX}{name.upper()}__{sub.upper()}" for sub in field.annotation.model_fields}
    return names


def configuration_table() -> str:
    """The Markdown table of every setting: variable, alias, default, meaning (docs/configuration.md)."""
    aliases = {f"{group}.{field}": name for name, (group, field) in FLAT_ALIASES.items()}
    rows = ["| variable | also read as | default | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        group = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) else None
        if group is None:
            rows.append(_row(f"{PREFIX}{name.upper()}", "", field))
            continue
        for sub, subfield in group.model_fields.items():
            variable = f"{PREFIX}{name.upper()}__{sub.upper()}"
            rows.append(_row(variable, aliases.get(f"{name}.{sub}", ""), subfield))
    return "\n".join(rows) + "\n"


def _row(variable: str, alias: str, field: FieldInfo) -> str:
    default = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(default, (dict, list)):
        shown = json.dumps(default)
    elif default is None or default == "":
        shown = "unset"
    else:
        shown = str(default)
    alias_cell = f"`{alias}`" if alias else ""
    description = (field.description or "").replace("|", "\\|")
    return f"| `{variable}` | {alias_cell} | `{shown}` | {description} |"


if __name__ == "__main__":
    print(configuration_doc(), end="")
