"""Model registry: model names -> weights -> loaded engines, with their lifecycle.

The server gives the registry its catalogue of names (server/catalogue.py); a request's model
name is only ever a key into it: it becomes a file path or a download only when the operator
configured it as one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

from engines.bundled import bundled_names, bundled_path
from engines.config import DiarizerConfig, WhisperConfig
from engines.devices import auto_compute_type, resolve_device
from engines.errors import ModelNotFoundError, ModelUnavailableError
from engines.parallelism import plan
from engines.types import Engine

log = logging.getLogger("oyez.models")

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
    kind: str = "speech"  # "speech" or "diarize": which loader builds its engine
    created: int = 0

    @property
    def pool(self) -> str:
        """The key of the engine that serves this name; names with the same weights and kind share one engine."""
        return self.weights if self.kind == "speech" else f"{self.kind}:{self.weights}"


class EngineLease:
    """One model name resolved once: its spec and pool, and its engine while leased (`acquire`/`release`)."""

    def __init__(self, registry: ModelRegistry, spec: ModelSpec):
        self.registry = registry
        self.spec = spec
        self.engine: Engine | None = None

    @property
    def pool(self) -> str:
        return self.spec.pool

    def acquire(self) -> Engine:
        """Load if needed and lease the engine (blocking; call off the event loop)."""
        if self.engine is None:
            self.engine = self.registry.acquire_spec(self.spec)
        return self.engine

    def release(self) -> None:
        if self.engine is not None:
            self.engine = None
            self.registry.release_pool(self.spec.pool)


class _Resident:
    """A loaded engine and how it is being used."""

    def __init__(self, engine: Engine, name: str):
        self.engine = engine
        self.name = name  # the model name that loaded it (for logs)
        self.in_use = 0
        self.last_used = time.monotonic()


class ModelRegistry:
    """Names -> weights -> loaded engines, with their lifecycle.

    Engines load lazily on first use (or from the preload list), one load per weights at a
    time under that weights' own lock, so loading one model never stalls requests to another.
    A request resolves its model name once (`resolve` -> EngineLease) and holds the lease while
    it uses the engine; only engines with no lease are unloaded: after `idle_seconds` without use,
    and least recently used first when more than `max_loaded` are resident. `loaders` maps a model
    kind to the function that builds its Engine, so other kinds (diarization) plug in the same way.
    """

    def __init__(
        self,
        specs: Mapping[str, ModelSpec] = (),
        *,
        whisper: WhisperConfig = WhisperConfig(),
        diarization: DiarizerConfig = DiarizerConfig(),
        idle_seconds: float = 0.0,
        max_loaded: int = 0,
        loaders: dict[str, Callable[[ModelSpec], Engine]] | None = None,
    ):
        self.whisper = whisper
        self.diarization = diarization
        self.cache_dir = Path(whisper.cache_dir).expanduser()
        self.idle_seconds = idle_seconds  # 0 = never unload for idleness
        self.max_loaded = max_loaded  # 0 = no cap
        self._diarizer = None
        self._diarizer_lock = threading.Lock()
        self._load_seconds: dict[str, float] = {}  # by pool, for the operator's metrics
        self._specs = dict(specs)
        self.loaders: dict[str, Callable[[ModelSpec], Engine]] = {
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
        return self.spec(name).pool

    def resolve(self, name: str) -> EngineLease:
        """Resolve `name` once into what a request needs: spec, pool and (once acquired) the engine."""
        return EngineLease(self, self.spec(name))

    def is_loaded(self, name: str) -> bool:
        return name in self._specs and self.pool(name) in self._resident

    def load_seconds(self, name: str) -> float | None:
        """How long the model's engine took to load, or None when it is not loaded."""
        return self._load_seconds.get(self.pool(name)) if self.is_loaded(name) else None

    def loaded_pools(self) -> list[str]:
        with self._guard:
            return list(self._resident)

    def call_stats(self) -> dict[str, object]:
        """Model-call counters (engines/batching.py BatchStats) of each loaded engine that keeps them, by pool."""
        with self._guard:
            resident = list(self._resident.items())
        stats = {}
        for pool, r in resident:
            read = getattr(r.engine, "call_stats", None)
            if read is not None and (value := read()) is not None:
                stats[pool] = value
        return stats

    def in_use(self, name: str) -> int:
        resident = self._resident.get(self.pool(name))
        return resident.in_use if resident else 0

    def engine(self, name: str) -> Engine:
        """The loaded engine for a model name, loading it on first use (blocking; call off the event loop).

        No lease is taken: the engine may be unloaded once idle. Requests hold an EngineLease.
        """
        spec = self.spec(name)
        engine = self.acquire_spec(spec)
        self.release_pool(spec.pool)
        return engine

    def acquire(self, name: str) -> Engine:
        """Load if needed and lease the engine for `name` (blocking; call off the event loop)."""
        return self.acquire_spec(self.spec(name))

    def release(self, name: str) -> None:
        self.release_pool(self.spec(name).pool)

    @contextmanager
    def lease(self, name: str) -> Iterator[Engine]:
        lease = self.resolve(name)
        try:
            yield lease.acquire()
        finally:
            lease.release()

    def acquire_spec(self, spec: ModelSpec) -> Engine:
        loader = self.loaders.get(spec.kind)
        if loader is None:
            raise ModelUnavailableError(f"The model `{spec.id}` is not available on this server.")
        key = spec.pool
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
            log.info("loaded %s (%s) in %.2fs", spec.id, spec.weights, self._load_seconds[key])
            resident = _Resident(engine, spec.id)
            resident.in_use = 1
            with self._guard:
                self._resident[key] = resident
        return engine

    def release_pool(self, pool: str) -> None:
        with self._guard:
            resident = self._resident.get(pool)
            if resident is not None and resident.in_use > 0:
                resident.in_use -= 1
                resident.last_used = time.monotonic()

    def _lease(self, key: str) -> Engine | None:
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

    def decoding(self) -> int:
        """Requests decoding speech now, over every resident engine (the diarizer sizes its threads by it)."""
        with self._guard:
            engines = [r.engine for r in self._resident.values()]
        return sum(engine.decoding() for engine in engines if hasattr(engine, "decoding"))

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
                    self._diarizer = PyannoteDiarizer(
                        self.diarization, device=self.whisper.device, cache_dir=self.cache_dir,
                        allow_downloads=self.whisper.allow_downloads, others_decoding=self.decoding,
                    )
        return self._diarizer

    def _load_diarizing(self, spec: ModelSpec) -> Engine:
        """The diarize model: the diarization pipeline plus its own Whisper engine on the same weights."""
        from engines.diarization.transcriber import DiarizingTranscriber

        diarizer = self.diarizer()
        return DiarizingTranscriber(self._load_whisper(spec), diarizer)

    def _load_whisper(self, spec: ModelSpec) -> Engine:
        # faster-whisper is imported on first load only
        from engines.whisper import FasterWhisperEngine

        cfg = self.whisper
        device = resolve_device(cfg.device)
        compute_type = cfg.compute_type if cfg.compute_type != "auto" else auto_compute_type(device)
        parallel = plan(device, cfg.num_workers, cfg.cpu_threads, max_batch=cfg.max_batch, solo_replica=cfg.solo_replica)
        engine = FasterWhisperEngine(
            self.resolve_weights(spec.weights),
            device=device,
            compute_type=compute_type,
            cpu_threads=parallel.threads,
            num_workers=parallel.replicas,
            beam_size=cfg.beam_size,
            batch_size=cfg.batch_size,
            max_batch=parallel.max_batch,
            solo_threads=parallel.solo_threads,
            window_seconds=cfg.window_seconds,
            coverage=cfg.coverage_redecode,
            trimmed_margin_s=cfg.trimmed_encode_margin_s,
            token_budget_per_second=cfg.token_budget_per_second,
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
            if not self.whisper.allow_downloads:
                raise ModelUnavailableError(
                    f"The weights `{weights}` are not on this server and downloads are disabled "
                    "(set OYEZ_ALLOW_DOWNLOADS=true, or configure a local directory)."
                )
            from faster_whisper.utils import download_model

            return Path(download_model(weights, cache_dir=str(self.cache_dir / "hub")))
        raise ModelUnavailableError(f"Unknown weights source `{weights}`.")
