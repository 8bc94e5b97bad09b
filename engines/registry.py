"""Model registry: public model names -> weights -> loaded engines.

A request's model name is only ever a key into this registry: it becomes a file
path or a download only when the operator configured it as one.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from engines.bundled import bundled_names, bundled_path
from engines.errors import ModelNotFoundError, ModelUnavailableError
from engines.types import DiarizerConfig
from engines.whisper import FasterWhisperEngine

log = logging.getLogger("oyez.models")

# OpenAI's public names for this endpoint. Each is served by local Whisper weights.
PUBLIC_MODELS = (
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-mini-transcribe-2025-12-15",
)
DIARIZE_MODEL = "gpt-4o-transcribe-diarize"

# Sizes faster-whisper can download by name (mapped to Systran's repositories).
_DOWNLOADABLE_SIZES = {
    "tiny", "tiny.en", "base", "base.en", "small", "small.en", "distil-small.en", "medium", "medium.en",
    "distil-medium.en", "large-v1", "large-v2", "large-v3", "large", "distil-large-v2", "distil-large-v3",
    "distil-large-v3.5", "large-v3-turbo", "turbo",
}


@dataclass(frozen=True)
class ModelSpec:
    id: str
    weights: str  # a bundled name, a local directory, or a Hugging Face repo id
    kind: str = "speech"  # "speech" or "diarize"
    created: int = 0


@dataclass(frozen=True)
class EngineConfig:
    device: str = "auto"
    compute_type: str = "auto"  # auto: int8 on CPU, float16 on CUDA
    cpu_threads: int = 0
    num_workers: int = 1
    beam_size: int = 5


class ModelRegistry:
    def __init__(
        self,
        *,
        default_weights: str = "base",
        models: dict[str, str] | None = None,
        cache_dir: Path,
        allow_downloads: bool = False,
        engine: EngineConfig = EngineConfig(),
        diarizer: DiarizerConfig = DiarizerConfig(),
    ):
        self.cache_dir = Path(cache_dir).expanduser()
        self.allow_downloads = allow_downloads
        self.engine_config = engine
        self.diarizer_config = diarizer
        self._diarizer = None
        self._diarizer_lock = threading.Lock()
        created = int(time.time())
        specs = {name: ModelSpec(name, default_weights, created=created) for name in PUBLIC_MODELS}
        specs[DIARIZE_MODEL] = ModelSpec(DIARIZE_MODEL, default_weights, kind="diarize", created=created)
        for name, weights in (models or {}).items():
            kind = specs[name].kind if name in specs else "speech"
            specs[name] = ModelSpec(name, weights, kind=kind, created=created)
        self._specs = specs
        self._engines: dict[str, FasterWhisperEngine] = {}
        self._load_seconds: dict[str, float] = {}  # by weights, for the operator's metrics
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def ids(self) -> list[str]:
        return list(self._specs)

    def spec(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise ModelNotFoundError(f"The model `{name}` does not exist or you do not have access to it.") from None

    def is_loaded(self, name: str) -> bool:
        spec = self._specs.get(name)
        if spec is None or spec.weights not in self._engines:
            return False
        return spec.kind == "speech" or self._diarizer is not None

    def load_seconds(self, name: str) -> float | None:
        """How long the model's weights took to load, or None when they are not loaded."""
        spec = self._specs.get(name)
        return self._load_seconds.get(spec.weights) if spec is not None and self.is_loaded(name) else None

    def engine(self, name: str):
        """The loaded engine for a model name, loading it on first use (blocking; call off the event loop).

        Speech models give a FasterWhisperEngine; the diarize model a DiarizingTranscriber
        (the same Whisper weights plus the diarization pipeline).
        """
        spec = self.spec(name)
        if spec.kind == "diarize":
            from engines.diarized import DiarizingTranscriber

            diarizer = self.diarizer()
            asr = self._speech_engine(name, spec.weights)
            return DiarizingTranscriber(asr, diarizer, self.diarizer_config.match_threshold)
        return self._speech_engine(name, spec.weights)

    def diarizer(self):
        """The diarization pipeline, loaded once (needs the `diarize` extra)."""
        if self._diarizer is None:
            with self._diarizer_lock:
                if self._diarizer is None:
                    try:
                        from engines.diarize import PyannoteDiarizer
                    except ImportError as exc:
                        raise ModelUnavailableError(
                            "Speaker diarization is not installed on this server "
                            f"(install the `diarize` extra: pip install 'oyez[diarize]'; {exc})."
                        ) from None
                    self._diarizer = PyannoteDiarizer(self.diarizer_config)
        return self._diarizer

    def _speech_engine(self, name: str, weights: str) -> FasterWhisperEngine:
        engine = self._engines.get(weights)
        if engine is not None:
            return engine
        with self._guard:
            lock = self._locks.setdefault(weights, threading.Lock())
        with lock:  # one load per weights; other models keep serving meanwhile
            engine = self._engines.get(weights)
            if engine is None:
                started = time.monotonic()
                cfg = self.engine_config
                compute_type = cfg.compute_type if cfg.compute_type != "auto" else auto_compute_type(cfg.device)
                engine = FasterWhisperEngine(
                    self.resolve_weights(weights),
                    device=cfg.device,
                    compute_type=compute_type,
                    cpu_threads=cfg.cpu_threads,
                    num_workers=cfg.num_workers,
                    beam_size=cfg.beam_size,
                )
                log.info(
                    "loaded %s (%s) on %s/%s in %.2fs",
                    name, weights, engine.device, engine.compute_type, time.monotonic() - started,
                )
                self._load_seconds[weights] = time.monotonic() - started
                self._engines[weights] = engine
        return engine

    def resolve_weights(self, weights: str) -> Path:
        """Turn a configured weights source into a local CTranslate2 model directory."""
        if weights in bundled_names():
            return bundled_path(weights, self.cache_dir)
        path = Path(weights).expanduser()
        if path.is_absolute() or weights.startswith("."):
            if not (path / "model.bin").is_file():
                raise ModelUnavailableError(f"No CTranslate2 Whisper model (model.bin) in the configured directory {weights}.")
            return path
        if "/" in weights or weights in _DOWNLOADABLE_SIZES:
            if not self.allow_downloads:
                raise ModelUnavailableError(
                    f"The weights `{weights}` are not on this server and downloads are disabled "
                    "(set OYEZ_ALLOW_DOWNLOADS=true, or configure a local directory)."
                )
            from faster_whisper.utils import download_model

            return Path(download_model(weights, cache_dir=str(self.cache_dir / "hub")))
        raise ModelUnavailableError(f"Unknown weights source `{weights}`.")


def auto_compute_type(device: str) -> str:
    """int8 on CPU, float16 on CUDA: the fastest types with no accuracy loss worth measuring on Whisper."""
    import ctranslate2

    on_cuda = device == "cuda" or (device == "auto" and ctranslate2.get_cuda_device_count() > 0)
    return "float16" if on_cuda else "int8"
