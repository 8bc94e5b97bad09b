"""Server settings, read from OYEZ_* environment variables (see the README's table)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OYEZ_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"

    # Models
    default_weights: str = Field(
        "base", description="Weights behind every public model name: bundled `base` or `tiny.en`, a directory, or a repo id."
    )
    models: dict[str, str] = Field(
        default_factory=dict,
        description='JSON object of extra or overridden model names -> weights, e.g. {"whisper-1": "/models/large-v3"}.',
    )
    preload: list[str] = Field(default_factory=lambda: ["whisper-1"], description="Model names loaded at start.")
    allow_downloads: bool = Field(False, description="Allow Hugging Face downloads for configured repo ids.")
    cache_dir: Path = Field(Path("~/.cache/oyez"), description="Joined bundled weights and downloads.")

    # Engine
    device: str = Field("auto", description="auto, cpu or cuda.")
    compute_type: str = Field("auto", description="auto (int8 on CPU, float16 on CUDA) or any CTranslate2 type.")
    cpu_threads: int = Field(0, description="Threads per model replica on CPU; 0 = the cores divided among replicas.")
    num_workers: int = Field(
        0, description="CTranslate2 replicas per loaded model (decodes at once inside it); 0 = auto (engines/parallelism.py)."
    )
    beam_size: int = 5

    # Diarization (gpt-4o-transcribe-diarize; needs the `diarize` extra)
    diarization_pipeline: str | None = Field(
        None, description="None = embedded offline pipeline; or a pyannote pipeline directory / Hub id."
    )
    hf_token: str | None = Field(None, description="Hugging Face token for a Hub pipeline (with allow_downloads).")
    diarization_clustering: str = Field(
        "spectral", pattern="^(spectral|agglomerative)$",
        description="Speaker clustering of the embedded pipeline: `spectral` (count from the eigengap, "
        "engines/diarization/clustering.py) or `agglomerative` (cut at diarization_threshold).",
    )
    diarization_threshold: float = Field(0.7, description="Clustering distance threshold of the embedded pipeline.")
    diarization_min_cluster_size: int = Field(12, description="Smallest cluster (in embeddings) kept as a speaker.")
    diarization_step: float = Field(0.1, description="Segmentation window step, as a fraction of its 10 s window.")
    diarization_voice_split: float = Field(
        0.4, ge=0, le=1, description="Cosine below which two stretches of one chunk's local speaker are split as "
        "two voices (embedded pipeline; 0 = never split)."
    )
    diarization_edge_extension_seconds: float = Field(
        0.5, ge=0, description="How far a speaker turn may grow over adjoining sound (engines/diarization/turn_edges.py; 0 = off)."
    )
    diarization_threads: int = Field(
        1, description="torch CPU threads for diarization; 0 = torch's default. More than 1 thrashes when ASR shares the cores."
    )
    speaker_match_threshold: float = Field(
        0.5, description="Cosine similarity a voice needs with a known speaker's reference to get that name."
    )

    # Scheduling and model lifecycle (server/scheduler.py, engines/registry.py)
    max_concurrency: int = Field(0, description="Requests decoding at once per loaded model; 0 = one per replica.")
    max_queue: int = Field(16, description="Requests waiting per loaded model; past it, 429 with Retry-After.")
    model_idle_seconds: float = Field(0.0, description="Unload a model unused this long; 0 = never.")
    max_loaded_models: int = Field(0, description="Most models resident at once (least recently used goes); 0 = no cap.")
    batch_size: int = Field(
        0, description="VAD chunks decoded per batch within a request (BatchedInferencePipeline); 0 = sequential."
    )
    window_seconds: float = Field(300.0, description="Audio longer than this is transcribed in windows of about this length.")

    # Requests
    vad_by_default: bool = Field(True, description="Voice-activity detection when the request sets no chunking_strategy.")
    max_upload_mb: float = Field(25.0, description="Largest accepted upload (OpenAI's limit is 25 MB).")
    max_audio_seconds: float = Field(4 * 3600.0, description="Longest accepted audio after decoding.")
    sse_keepalive_seconds: float = Field(10.0, description="Keep-alive comment interval on streams with no text.")

    # Production (security, limits, operations; see server/auth.py, server/limits.py, server/request_log.py)
    api_keys: str = Field("", description="API keys, comma-separated or a JSON list; empty = no authentication.")
    api_keys_file: Path | None = Field(None, description="File of API keys, one a line (# comments).")
    max_form_fields: int = Field(1000, description="Most form fields per request (400 past it).")
    max_speaker_references: int = Field(4, description="Most known_speaker_names / known_speaker_references.")
    max_reference_mb: float = Field(5.0, description="Largest decoded known_speaker_references audio, per reference.")
    body_timeout_seconds: float = Field(120.0, description="The whole upload must arrive within this (408 past it).")
    request_timeout_seconds: float = Field(1800.0, description="Wall time of one non-streamed decode (504 past it).")
    shutdown_timeout_seconds: float = Field(30.0, description="On SIGTERM, how long in-flight requests may finish.")
    log_format: str = Field("text", description="text or json: one structured line per request either way.")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
