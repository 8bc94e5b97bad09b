"""Operations: /health, /ready, Prometheus /metrics, X-Request-Id and the per-request log line."""

from __future__ import annotations

import json
import re
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.request_log import JsonFormatter, RequestInfo
from tests.helpers import DATA, references, wer

JFK = DATA / "jfk.wav"


def scrape(http) -> dict[tuple[str, tuple], float]:
    r = http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_health_and_ready(http):
    assert http.get("/health").json() == {"status": "ok"}
    ready = http.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert "whisper-1" in ready.json()["loaded"]


def test_metrics_count_a_transcription(http):
    before = scrape(http)
    with open(JFK, "rb") as fh:
        r = http.post("/v1/audio/transcriptions", files={"file": fh},
                      data={"model": "whisper-1", "response_format": "verbose_json"})
    assert r.status_code == 200 and wer(references()["jfk.wav"], r.json()["text"]) <= 0.10
    with open(JFK, "rb") as fh:
        bad = http.post("/v1/audio/transcriptions", files={"file": fh}, data={"model": "whisper-1", "temperature": "hot"})
    assert bad.status_code == 400
    after = scrape(http)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"endpoint": "transcriptions", "model": "whisper-1", "response_format": "verbose_json", "status": "200"}
    assert delta("oyez_requests_total", **ok) == 1
    assert delta("oyez_requests_total", endpoint="transcriptions", model="none", response_format="none", status="400") == 1
    assert delta("oyez_errors_total", status="400", code="invalid_value") == 1
    assert delta("oyez_audio_seconds_total", model="whisper-1") == pytest.approx(11.0, abs=0.01)
    assert delta("oyez_processing_seconds_count", model="whisper-1") == 1
    run = delta("oyez_processing_seconds_sum", model="whisper-1")
    assert 0 < run < 300
    assert delta("oyez_real_time_factor_count", model="whisper-1") == 1
    assert delta("oyez_real_time_factor_sum", model="whisper-1") == pytest.approx(run / 11.0, rel=1e-6)
    assert delta("oyez_queue_wait_seconds_count", model="whisper-1") == 1
    assert value(after, "oyez_queue_depth", model="whisper-1") == 0
    assert value(after, "oyez_decodes_running", model="whisper-1") == 0
    assert value(after, "oyez_model_loaded", model="whisper-1") == 1
    listed = {m["id"]: m["loaded"] for m in http.get("/v1/models").json()["data"]}
    assert value(after, "oyez_model_loaded", model="gpt-4o-transcribe-diarize") == listed["gpt-4o-transcribe-diarize"]
    assert 0 < value(after, "oyez_model_load_seconds", model="whisper-1") < 300
    assert value(after, "process_resident_memory_bytes") > 50 * 2**20
    assert value(after, "oyez_requests_in_progress") == 1  # the scrape itself


def test_metrics_labels_stay_bounded(http):
    """A made-up model name must not become a label value (no cardinality blow-up)."""
    with open(JFK, "rb") as fh:
        assert http.post("/v1/audio/transcriptions", files={"file": fh}, data={"model": "evil-name-123"}).status_code == 404
    text = http.get("/metrics").text
    assert "evil-name-123" not in text
    assert 'oyez_errors_total{code="model_not_found",status="404"}' in text


def test_streamed_request_is_measured(client, http):
    before = scrape(http)
    with open(JFK, "rb") as fh:
        events = list(client.audio.transcriptions.create(file=fh, model="gpt-4o-mini-transcribe", stream=True))
    assert events[-1].type == "transcript.text.done"
    labels = {"endpoint": "transcriptions", "model": "gpt-4o-mini-transcribe", "response_format": "json", "status": "200"}
    deadline = time.monotonic() + 10  # the stream's accounting runs just after its last event is sent
    while True:
        after = scrape(http)
        if value(after, "oyez_requests_total", **labels) - value(before, "oyez_requests_total", **labels) >= 1 \
                or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert value(after, "oyez_requests_total", **labels) - value(before, "oyez_requests_total", **labels) == 1
    assert value(after, "oyez_audio_seconds_total", model="gpt-4o-mini-transcribe") - value(
        before, "oyez_audio_seconds_total", model="gpt-4o-mini-transcribe") == pytest.approx(11.0, abs=0.01)


def test_request_id_is_returned_and_logged(http, server):
    with open(JFK, "rb") as fh:
        r = http.post("/v1/audio/transcriptions", files={"file": fh}, data={"model": "whisper-1"},
                      headers={"X-Request-Id": "client-id.42"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "client-id.42"
    generated = http.get("/v1/models").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    hostile = http.get("/v1/models", headers={"X-Request-Id": "x" * 500}).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", hostile)  # not a usable id: replaced, never echoed
    errored = http.get("/v1/models/nope", headers={"X-Request-Id": "err-1"})
    assert errored.status_code == 404 and errored.headers["x-request-id"] == "err-1"

    line = log_line(server, "request_id=client-id.42")
    for part in ("status=200", "model=whisper-1", "response_format=json", "audio_s=11.0", "queue_wait_s=", "run_s=",
                 "path=/v1/audio/transcriptions"):
        assert part in line, line
    line = log_line(server, "request_id=err-1")
    assert "status=404" in line and "error_code=model_not_found" in line


def log_line(server, needle: str) -> str:
    """The server's log line holding `needle`; it is written just after the response is sent, so wait a little."""
    deadline = time.monotonic() + 10
    while True:
        found = [line for line in server.log_text().splitlines() if needle in line]
        if found or time.monotonic() > deadline:
            assert found, f"no log line with {needle}"
            return found[0]
        time.sleep(0.1)


def test_json_log_lines_carry_the_fields():
    import logging

    info = RequestInfo(id="abc", model="whisper-1", response_format="srt", audio_s=3.5, queue_wait_s=0.1, run_s=1.2)
    fields = {"request_id": info.id, "status": 200, "model": info.model, "audio_s": info.audio_s}
    record = logging.LogRecord("oyez.request", logging.INFO, __file__, 1, "request %s", ("...",), None)
    record.fields = fields
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "request" and out["level"] == "info" and out["logger"] == "oyez.request"
    assert out["request_id"] == "abc" and out["status"] == 200 and out["audio_s"] == 3.5
    plain = logging.LogRecord("oyez.server", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    assert json.loads(JsonFormatter().format(plain))["message"] == "hello world"
