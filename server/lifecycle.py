"""Model lifecycle around the app's life: preload at start (readiness), unload idle models while it runs."""

from __future__ import annotations

import asyncio
import logging
import threading

import anyio

from engines.registry import ModelRegistry
from server.settings import SchedulerSettings

log = logging.getLogger("oyez.server")


class Readiness:
    """Loads the preload list in a background thread; /ready answers 503 until it is done, or if a load failed."""

    def __init__(self, registry: ModelRegistry, preload: list[str]):
        self.registry = registry
        self.preload = preload
        self.done = threading.Event()
        self.failed: list[str] = []

    def start(self) -> None:
        threading.Thread(target=self._load, name="oyez-preload", daemon=True).start()

    def _load(self) -> None:
        for name in self.preload:
            try:
                self.registry.engine(name)
            except Exception:
                log.exception("could not preload model %s", name)
                self.failed.append(name)
        self.done.set()


async def sweep_models(registry: ModelRegistry, scheduling: SchedulerSettings) -> None:
    """Unload idle models and enforce the resident cap, off the event loop, every few seconds."""
    idle = scheduling.model_idle_seconds
    if idle <= 0 and scheduling.max_loaded_models <= 0:
        return
    interval = min(30.0, max(0.5, idle / 4)) if idle > 0 else 5.0
    while True:
        await asyncio.sleep(interval)
        try:
            await anyio.to_thread.run_sync(registry.maintain)
        except Exception:
            log.exception("model sweep failed")
