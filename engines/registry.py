"""Model registry: public model names -> weights -> loaded engines.

A request's model name is only ever a key into this registry: it becomes a file
path or a download only when the operator configured it as one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

from engines.bundled import bundled_names, bundled_path
from engines.errors import ModelNotFoundError, ModelUnavailableError
from engines.types import DiarizerConfig

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
    batch_size: int = 0  # >0: VAD chunks decoded in batches (engines/batched.py); 0: sequential
    window_seconds: float = 300.0  # longer audio is transcribed in windows of about this length
    coverage_redecode: bool = True  # decode again speech no segment covers (engines/coverage.py)


class _Resident:
    """A loaded engine and how it is being used."""

    def __init__(self, engine: Any, name: str):
        self.engine = engine
        self.name = name  # the model name that loaded it (for logs)
        self.in_use = 0
        self.last_used = time.monotonic()


class ModelRegistry:
    """Names -> weights -> loaded engines, with their lifecycle.

    Engines load lazily on first use (or from the preload list), one load per weights at a
    time under that weights' own lock, so loading one model never stalls requests to another.
    A request holds a lease (`acquire`/`release`, or `lease()`) while it uses an engine; only
    engines with no lease are unloaded: after `idle_seconds` without use, and least recently
    used first when more than `max_loaded` are resident. Engines are anything with an optional
    `close()`; `loaders` maps a model kind to the function that builds one, so other kinds
    (diarization) plug in the same way.
    """

    def __init__(
        self,
        *,
        default_weights: str = "base",
        models: dict[str, str] | None = None,
        cache_dir: Path,
        allow_downloads: bool = False,
        engine: EngineConfig = EngineConfig(),
        idle_seconds: float = 0.0,
        max_loaded: int = 0,
        loaders: dict[str, Callable[[ModelSpec], Any]] | None = None,
        diarizer: DiarizerConfig = DiarizerConfig(),
    ):
        self.cache_dir = Path(cache_dir).expanduser()
        self.allow_downloads = allow_downloads
        self.engine_config = engine
        self.idle_seconds = idle_seconds  # 0 = never unload for idleness
        self.max_loaded = max_loaded  # 0 = no cap
        self.diarizer_config = diarizer
        self._diarizer = None
        self._diarizer_lock = threading.Lock()
        self._load_seconds: dict[str, float] = {}  # by pool, for the operator's metrics
        created = int(time.time())
        specs = {name: ModelSpec(name, default_weights, created=created) for name in PUBLIC_MODELS}
        specs[DIARIZE_MODEL] = ModelSpec(DIARIZE_MODEL, default_weights, kind="diarize", created=created)
        for name, weights in (models or {}).items():
            kind = specs[name].kind if name in specs else "speech"
            specs[name] = ModelSpec(name, weights, kind=kind, created=created)
        self._specs = specs
        self.loaders: dict[str, Callable[[ModelSpec], Any]] = {
            "speech": self._load_whisper, "diarize": self._load_diarizing, **(loaders or {})
        }
        self._resident: OrderedDict[str, _Resident] = OrderedDict()  # least recently used first
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def ids(self) -> list[str]:
        return list(self._specs)

    def spec(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise ModelNotFoundError(f"The model `{name}` does not exist or you do not have access to it.") from None

    def pool(self, name: str) -> str:
        """The key of the engine that serves `name`; names with the same weights share one engine."""
        spec = self.spec(name)
        return spec.weights if spec.kind == "speech" else f"{spec.kind}:{spec.weights}"

    def is_loaded(self, name: str) -> bool:
        return name in self._specs and self.pool(name) in self._resident

    def load_seconds(self, name: str) -> float | None:
        """How long the model's engine took to load, or None when it is not loaded."""
        return self._load_seconds.get(self.pool(name)) if self.is_loaded(name) else None

    def loaded_pools(self) -> list[str]:
        with self._guard:
            return list(self._resident)

    def in_use(self, name: str) -> int:
        resident = self._resident.get(self.pool(name))
        return resident.in_use if resident else 0

    def engine(self, name: str) -> Any:
        """The loaded engine for a model name, loading it on first use (blocking; call off the event loop).

        No lease is taken: the engine may be unloaded once idle. Requests use `acquire`/`lease`.
        """
        engine = self.acquire(name)
        self.release(name)
        return engine

    def acquire(self, name: str) -> Any:
        """Load if needed and lease the engine for `name` (blocking; call off the event loop)."""
        spec = self.spec(name)
        loader = self.loaders.get(spec.kind)
        if loader is None:
            raise ModelUnavailableError(f"The model `{name}` is not available on this server.")
        key = self.pool(name)
        if (engine := self._lease(key)) is not None:
            return engine
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one load per weights; other models keep serving meanwhile
            if (engine := self._lease(key)) is not None:
                return engine
            self.maintain(room_for=1)
            started = time.monotonic()
            engine = loader(spec)
            self._load_seconds[key] = time.monotonic() - started
            log.info("loaded %s (%s) in %.2fs", name, spec.weights, self._load_seconds[key])
            resident = _Resident(engine, name)
            resident.in_use = 1
            with self._guard:
                self._resident[key] = resident
        return engine

    def release(self, name: str) -> None:
        with self._guard:
            resident = self._resident.get(self.pool(name))
            if resident is not None and resident.in_use > 0:
                resident.in_use -= 1
                resident.last_used = time.monotonic()

    @contextmanager
    def lease(self, name: str) -> Iterator[Any]:
        engine = self.acquire(name)
        try:
            yield engine
        finally:
            self.release(name)

    def _lease(self, key: str) -> Any:
        with self._guard:
            resident = self._resident.get(key)
            if resident is None:
                return None
            resident.in_use += 1
            resident.last_used = time.monotonic()
            self._resident.move_to_end(key)
            return resident.engine

    def maintain(self, now: float | None = None, room_for: int = 0) -> list[str]:
        """Unload idle engines, then least recently used ones over the cap (leaving `room_for` free).

        Engines in use are never unloaded; while every resident engine is busy the cap is
        exceeded for a while, and the next call brings it back. Blocking (close() may take
        a moment): call off the event loop. Returns the pools unloaded.
        """
        now = time.monotonic() if now is None else now
        victims: list[tuple[str, _Resident]] = []
        with self._guard:
            for key, r in list(self._resident.items()):
                if r.in_use == 0 and self.idle_seconds > 0 and now - r.last_used >= self.idle_seconds:
                    victims.append((key, self._resident.pop(key)))
            if self.max_loaded > 0:
                excess = len(self._resident) + room_for - self.max_loaded
                for key, r in list(self._resident.items()):  # least recently used first
                    if excess <= 0:
                        break
                    if r.in_use == 0:
                        victims.append((key, self._resident.pop(key)))
                        excess -= 1
                if excess > 0:
                    log.warning("%d models resident with every one in use; over the cap of %d for now",
                                len(self._resident) + room_for, self.max_loaded)
        for key, r in victims:
            idle = now - r.last_used
            log.info("unloading %s (idle %.0fs)", key, idle)
            close = getattr(r.engine, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("error while unloading %s", key)
        return [key for key, _ in victims]

    def diarizer(self):
        """The diarization pipeline, loaded once and kept (needs the `diarize` extra)."""
        if self._diarizer is None:
            with self._diarizer_lock:
                if self._diarizer is None:
                    try:
                        from engines.diarization.pipeline import PyannoteDiarizer
                    except ImportError as exc:
                        raise ModelUnavailableError(
                            "Speaker diarization is not installed on this server "
                            f"(install the `diarize` extra: pip install 'oyez[diarize]'; {exc})."
                        ) from None
                    self._diarizer = PyannoteDiarizer(self.diarizer_config)
        return self._diarizer

    def _load_diarizing(self, spec: ModelSpec) -> Any:
        """The diarize model: the diarization pipeline plus its own Whisper engine on the same weights."""
        from engines.diarization.transcriber import DiarizingTranscriber

        diarizer = self.diarizer()
        return DiarizingTranscriber(self._load_whisper(spec), diarizer, self.diarizer_config.match_threshold)

    def _load_whisper(self, spec: ModelSpec) -> Any:
        # faster-whisper is imported on first load only
        from engines.whisper import FasterWhisperEngine

        cfg = self.engine_config
        device = resolve_device(cfg.device)
        compute_type = cfg.compute_type if cfg.compute_type != "auto" else auto_compute_type(device)
        engine = FasterWhisperEngine(
            self.resolve_weights(spec.weights),
            device=device,
            compute_type=compute_type,
            cpu_threads=cfg.cpu_threads,
            num_workers=cfg.num_workers,
            beam_size=cfg.beam_size,
            batch_size=cfg.batch_size,
            window_seconds=cfg.window_seconds,
            coverage=cfg.coverage_redecode,
        )
        log.info("%s runs on %s/%s", spec.weights, engine.device, engine.compute_type)
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


# CTranslate2 4.x is built against CUDA 12: it links the CUDA runtime statically (so it counts GPUs on
# any recent driver) but loads cuBLAS by this name at its first matrix product on the GPU.
CTRANSLATE2_CUBLAS = "libcublas.so.12"


@lru_cache(maxsize=1)
def cuda_devices() -> int:
    """GPUs CTranslate2 can actually compute on: counted, and only if the cuBLAS it needs loads."""
    import ctranslate2

    try:
        count = ctranslate2.get_cuda_device_count()
    except Exception:  # a CUDA runtime that cannot start counts as none
        return 0
    if count and not _loadable(CTRANSLATE2_CUBLAS):
        log.warning(
            "CTranslate2 sees %d GPU(s) but cannot load %s (CUDA 12's cuBLAS), so it could not transcribe on them; "
            "device=auto uses the CPU. Install CUDA 12's cuBLAS (e.g. pip install nvidia-cublas-cu12 and put its lib "
            "directory on LD_LIBRARY_PATH, or use an nvidia/cuda:12.x image) to use the GPU.",
            count, CTRANSLATE2_CUBLAS,
        )
        return 0
    return count


def _loadable(library: str) -> bool:
    import ctypes

    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


def resolve_device(device: str) -> str:
    """`auto` is CUDA when CTranslate2 sees a GPU, else CPU."""
    if device == "auto":
        return "cuda" if cuda_devices() > 0 else "cpu"
    return device


def auto_compute_type(device: str) -> str:
    """int8 on CPU, float16 on CUDA: the fastest types with no accuracy loss worth measuring on Whisper."""
    return "float16" if resolve_device(device) == "cuda" else "int8"
