"""Unit: model lifecycle in the registry (lazy load, leases, idle unload, LRU cap, parallel loads),
and the device/compute/batch choices for CUDA, exercised on CPU with a fake GPU count."""

from __future__ import annotations

import threading
import time

import pytest

import engines.devices as devices_module
from engines.config import WhisperConfig
from engines.registry import ModelRegistry, ModelSpec


class FakeEngine:
    def __init__(self, weights: str):
        self.weights = weights
        self.closed = False

    def close(self) -> None:
        self.closed = True


def make(tmp_path, loader, **kw) -> ModelRegistry:
    models = {"a": "/w/a", "b": "/w/b", "c": "/w/c", "a-too": "/w/a"}
    specs = {name: ModelSpec(name, weights) for name, weights in models.items()}
    return ModelRegistry(specs, whisper=WhisperConfig(cache_dir=tmp_path), loaders={"speech": loader}, **kw)


def test_lazy_load_shared_weights_and_idle_unload(tmp_path):
    loads = []

    def loader(spec):
        loads.append(spec.weights)
        return FakeEngine(spec.weights)

    reg = make(tmp_path, loader, idle_seconds=60)
    assert not reg.is_loaded("a") and loads == []
    engine = reg.acquire("a")
    assert reg.acquire("a-too") is engine  # same weights, one engine
    assert loads == ["/w/a"] and reg.is_loaded("a-too") and reg.in_use("a") == 2
    assert reg.pool("a") == reg.pool("a-too") == "/w/a"
    assert reg.maintain(now=time.monotonic() + 3600) == []  # leased: never unloaded
    reg.release("a")
    reg.release("a-too")
    assert reg.maintain(now=time.monotonic() + 30) == []  # not idle long enough
    assert reg.maintain(now=time.monotonic() + 61) == ["/w/a"]
    assert engine.closed and not reg.is_loaded("a")
    with reg.lease("a") as again:  # loads again on next use
        assert again is not engine and loads == ["/w/a", "/w/a"]


def test_lru_cap_unloads_least_recently_used_idle_engine(tmp_path):
    reg = make(tmp_path, lambda spec: FakeEngine(spec.weights), max_loaded=2)
    a = reg.engine("a")
    b = reg.engine("b")
    reg.engine("a")  # a is now more recently used than b
    c = reg.acquire("c")
    assert reg.loaded_pools() == ["/w/a", "/w/c"] and b.closed and not a.closed
    # Every resident engine busy: the cap is exceeded rather than a request stalled...
    reg.acquire("a")
    reg.acquire("b")
    assert len(reg.loaded_pools()) == 3
    # ...and comes back once they are free again.
    reg.release("a")
    reg.release("b")
    reg.release("c")
    reg.maintain()
    assert len(reg.loaded_pools()) == 2 and "/w/b" in reg.loaded_pools() and c.closed


def test_loading_one_model_never_stalls_another(tmp_path):
    release_a = threading.Event()
    started_a = threading.Event()

    def loader(spec):
        if spec.weights == "/w/a":
            started_a.set()
            assert release_a.wait(10)
        return FakeEngine(spec.weights)

    reg = make(tmp_path, loader)
    reg.engine("b")
    slow = threading.Thread(target=reg.engine, args=("a",))
    slow.start()
    assert started_a.wait(5)
    got = []
    other = threading.Thread(target=lambda: got.append(reg.engine("b")))  # loaded one
    third = threading.Thread(target=lambda: got.append(reg.engine("c")))  # a different load
    other.start()
    third.start()
    other.join(5)
    third.join(5)
    assert len(got) == 2 and slow.is_alive()  # both answered while "a" is still loading
    # A second request for "a" waits for the load in progress instead of loading twice.
    twin = threading.Thread(target=reg.engine, args=("a-too",))
    twin.start()
    time.sleep(0.1)
    assert twin.is_alive()
    release_a.set()
    slow.join(5)
    twin.join(5)
    assert reg.is_loaded("a") and not twin.is_alive()


def test_failed_load_leaves_nothing_resident(tmp_path):
    def loader(spec):
        raise RuntimeError("out of memory")

    reg = make(tmp_path, loader)
    with pytest.raises(RuntimeError):
        reg.acquire("a")
    assert not reg.is_loaded("a") and reg.loaded_pools() == []


def test_auto_device_picks_cuda_and_float16_when_a_gpu_is_seen(monkeypatch):
    monkeypatch.setattr(devices_module, "cuda_devices", lambda: 1)
    assert devices_module.resolve_device("auto") == "cuda"
    assert devices_module.auto_compute_type("auto") == "float16"
    assert devices_module.resolve_device("cpu") == "cpu"
    monkeypatch.setattr(devices_module, "cuda_devices", lambda: 0)
    assert devices_module.resolve_device("auto") == "cpu"
    assert devices_module.auto_compute_type("auto") == "int8"


def test_a_gpu_ctranslate2_cannot_compute_on_counts_as_none(monkeypatch, caplog):
    """CTranslate2 counts GPUs with its own CUDA 12 runtime but loads CUDA 12's cuBLAS only at the first
    product: on a host with only CUDA 13 libraries (seen on an H100) `auto` used to pick the GPU and every
    request then failed. Such a GPU now counts as none, with a warning, and the CPU serves."""
    import ctranslate2

    probe = devices_module.cuda_devices  # cached: the probe runs (and warns) once per process
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    monkeypatch.setattr(devices_module, "_loadable", lambda library: False)
    probe.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="oyez.models"):
            assert probe() == 0
            assert devices_module.resolve_device("auto") == "cpu"
        assert "libcublas.so.12" in caplog.text
        monkeypatch.setattr(devices_module, "_loadable", lambda library: library == "libcublas.so.12")
        probe.cache_clear()
        assert probe() == 1 and devices_module.resolve_device("auto") == "cuda"
    finally:
        monkeypatch.undo()
        probe.cache_clear()
    assert not devices_module._loadable("libno-such-library.so.1")


def test_whisper_loader_passes_cuda_choices_to_the_engine(tmp_path, monkeypatch):
    """The real loader with a GPU reported: the engine is asked for cuda/float16, with the configured batch size."""
    import engines.whisper as whisper_module

    seen = {}

    class Recorder:
        def __init__(self, model_dir, **kwargs):
            seen.update(kwargs, model_dir=model_dir)
            self.device, self.compute_type = kwargs["device"], kwargs["compute_type"]

    monkeypatch.setattr(devices_module, "cuda_devices", lambda: 1)
    monkeypatch.setattr(whisper_module, "FasterWhisperEngine", Recorder)
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "model.bin").write_bytes(b"x")
    reg = ModelRegistry({"x": ModelSpec("x", str(model_dir))}, whisper=WhisperConfig(cache_dir=tmp_path, batch_size=8))
    reg.engine("x")
    assert (seen["device"], seen["compute_type"], seen["batch_size"]) == ("cuda", "float16", 8)
    assert seen["model_dir"] == model_dir


def test_parallelism_splits_cores_among_replicas_and_honours_settings():
    from engines.parallelism import plan

    assert plan("cpu", cores=2) == plan("cpu", 0, 0, 0, cores=2)
    p = plan("cpu", cores=2)
    # what measured best on 2 cores: one-thread replicas side by side, every core for a lone request
    assert (p.replicas, p.threads, p.concurrency, p.solo_threads, p.max_batch) == (2, 1, 2, 2, 1)
    p = plan("cpu", cores=16)
    assert (p.replicas, p.threads, p.concurrency, p.solo_threads) == (4, 4, 4, 16)
    p = plan("cpu", num_workers=1, cores=8)
    assert (p.replicas, p.threads, p.concurrency, p.solo_threads) == (1, 8, 1, 0)  # one replica takes every core
    p = plan("cpu", num_workers=1, cpu_threads=1, cores=16)  # a Ray replica given one CPU: no solo replica
    assert (p.replicas, p.threads, p.solo_threads) == (1, 1, 0)
    p = plan("cpu", cores=2, solo_replica=False)
    assert (p.replicas, p.threads, p.solo_threads) == (2, 1, 0)
    p = plan("cpu", num_workers=2, cpu_threads=3, max_concurrency=5, cores=2, max_batch=4)
    assert (p.replicas, p.threads, p.concurrency, p.max_batch) == (2, 3, 5, 4)  # explicit settings win
    p = plan("cuda", cores=8)
    assert (p.replicas, p.concurrency, p.max_batch, p.solo_threads) == (2, 64, 32, 0)
    p = plan("cuda", cores=8, max_batch=1)
    assert (p.replicas, p.concurrency) == (2, 2)
