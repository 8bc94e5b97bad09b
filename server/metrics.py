"""Prometheus metrics (prometheus-client), served at GET /metrics.

One Metrics object per app, on its own CollectorRegistry, so several apps in one process (tests)
never clash. Label values are bounded: `model` is only ever a configured model name (or
"unknown"), `response_format` a validated format, `code` an error code the server itself chose.

Queue and run figures are recorded through queue_entered / queue_left / observe_run, called by the
transcription service (server/transcription.py) around the scheduler's admission and each run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.responses import Response

from engines.devices import gpu_usage

if TYPE_CHECKING:
    from engines.registry import ModelRegistry

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)


class Metrics:
    def __init__(self, models: ModelRegistry | None = None):
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_open_fds, CPU seconds
        self.requests = Counter(
            "oyez_requests", "HTTP requests answered, by endpoint, model, response format and status.",
            ["endpoint", "model", "response_format", "status"], registry=r,
        )
        self.errors = Counter("oyez_errors", "Error responses by status and OpenAI error code.", ["status", "code"], registry=r)
        self.in_progress = Gauge("oyez_requests_in_progress", "HTTP requests being handled now.", registry=r)
        self.audio_seconds = Counter("oyez_audio_seconds", "Seconds of decoded audio transcribed.", ["model"], registry=r)
        self.processing = Histogram(
            "oyez_processing_seconds", "Decode time per request (after the queue).", ["model"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.rtf = Histogram(
            "oyez_real_time_factor", "Decode time divided by audio duration, per request.", ["model"],
            buckets=RTF_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge("oyez_queue_depth", "Requests waiting for a decode slot.", ["model"], registry=r)
        self.queue_wait = Histogram(
            "oyez_queue_wait_seconds", "Time a request waited for a decode slot.", ["model"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.redecoded = Counter(
            "oyez_redecoded_segments", "Stretches of speech no decoded segment covered, decoded again and kept "
            "(engines/coverage.py).", ["model"], registry=r,
        )
        self.redecoded_seconds = Counter(
            "oyez_redecoded_seconds", "Seconds of speech decoded again by the coverage guarantee.", ["model"], registry=r,
        )
        self.running = Gauge("oyez_decodes_running", "Decodes running now.", ["model"], registry=r)
        if models is not None:
            r.register(_ModelCollector(models))

    # Admission: call around whatever makes requests wait for a decode slot.
    def queue_entered(self, model: str) -> None:
        self.queue_depth.labels(model).inc()

    def queue_left(self, model: str, waited_s: float) -> None:
        self.queue_depth.labels(model).dec()
        self.queue_wait.labels(model).observe(waited_s)

    def observe_run(self, model: str, run_s: float, audio_s: float) -> None:
        self.processing.labels(model).observe(run_s)
        self.audio_seconds.labels(model).inc(audio_s)
        if audio_s > 0:
            self.rtf.labels(model).observe(run_s / audio_s)

    def observe_coverage(self, model: str, redecoded: int, seconds: float) -> None:
        """What the coverage guarantee re-decoded for one request (TranscriptionStream/Transcript.redecoded)."""
        self.redecoded.labels(model).inc(redecoded)
        self.redecoded_seconds.labels(model).inc(seconds)

    def observe_response(self, endpoint: str, model: str, response_format: str, status: int, code: str | None) -> None:
        self.requests.labels(endpoint, model, response_format, str(status)).inc()
        if status >= 400:
            self.errors.labels(str(status), code or "none").inc()

    def response(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class _ModelCollector:
    """Reads the model registry at scrape time: which models are loaded and how long they took."""

    def __init__(self, models: ModelRegistry):
        self.models = models

    def describe(self):
        return []

    def collect(self):
        loaded = GaugeMetricFamily("oyez_model_loaded", "1 when the model's weights are loaded.", labels=["model"])
        load = GaugeMetricFamily("oyez_model_load_seconds", "How long the model took to load.", labels=["model"])
        for name in self.models.ids():
            loaded.add_metric([name], 1.0 if self.models.is_loaded(name) else 0.0)
            seconds = self.models.load_seconds(name)
            if seconds is not None:
                load.add_metric([name], seconds)
        yield loaded
        yield load
        calls = CounterMetricFamily(
            "oyez_model_calls", "CTranslate2 calls by kind (encode, generate, align, detect_language) and lane (solo: "
            "the all-cores replica of a lone request; replicas) (engines/batching.py).", labels=["weights", "kind", "lane"])
        rows = CounterMetricFamily(
            "oyez_model_call_rows", "Rows (30 s windows) those calls carried; above the calls when requests were merged.",
            labels=["weights", "kind"])
        for pool, stats in self.models.call_stats().items():
            for (kind, lane), count in sorted(stats.calls.items()):
                calls.add_metric([pool, kind, lane], count)
            for kind, count in sorted(stats.rows.items()):
                rows.add_metric([pool, kind], count)
        yield calls
        yield rows
        usage = gpu_usage()
        if usage:
            busy = GaugeMetricFamily("oyez_gpu_utilization_percent", "Share of time a GPU kernel ran (NVML).", labels=["gpu"])
            memory = GaugeMetricFamily("oyez_gpu_memory_used_bytes", "GPU memory in use (NVML).", labels=["gpu"])
            for gpu in usage:
                busy.add_metric([str(gpu.index)], gpu.utilization_percent)
                memory.add_metric([str(gpu.index)], gpu.memory_used_bytes)
            yield busy
            yield memory
