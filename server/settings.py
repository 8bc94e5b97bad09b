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

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
