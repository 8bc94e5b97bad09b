"""Every bad request gets OpenAI's error envelope with the right status, and the server keeps serving."""

from __future__ import annotations

import openai
import pytest

from tests.helpers import DATA, references, shared, wer

JFK = DATA / "jfk.wav"


def assert_envelope(r, status: int, param: str | None = None, code: str | None = None):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] == ("invalid_request_error" if status < 500 else "server_error")
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


def post(http, data: dict, path=JFK, url="/v1/audio/transcriptions", content=None):
    if content is not None:
        return http.post(url, files={"file": ("upload.wav", content, "audio/wav")}, data=data)
    with open(path, "rb") as fh:
        return http.post(url, files={"file": (path.name, fh, "audio/wav")}, data=data)


@pytest.mark.parametrize(
    "data, param",
    [
        ({"model": "whisper-1", "response_format": "xml"}, "response_format"),
        ({"model": "whisper-1", "language": "klingon"}, "language"),
        ({"model": "whisper-1", "temperature": "1.5"}, "temperature"),
        ({"model": "whisper-1", "temperature": "-0.1"}, "temperature"),
        ({"model": "whisper-1", "temperature": "hot"}, "temperature"),
        ({"model": "whisper-1", "temperature": "nan"}, "temperature"),
        ({"model": "whisper-1", "include[]": "everything"}, "include"),
        ({"model": "whisper-1", "timestamp_granularities[]": "sentence"}, "timestamp_granularities"),
        ({"model": "whisper-1", "chunking_strategy": "sometimes"}, "chunking_strategy"),
        ({"model": "whisper-1", "chunking_strategy": "{not json"}, "chunking_strategy"),
        ({"model": "whisper-1", "chunking_strategy[type]": "client_vad"}, "chunking_strategy"),
        ({"model": "whisper-1", "chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": "2"}, "chunking_strategy"),
        ({"model": "whisper-1", "chunking_strategy[type]": "server_vad", "chunking_strategy[silence_duration_ms]": "x"}, "chunking_strategy"),
        ({"model": "whisper-1", "chunking_strategy[type]": "server_vad", "chunking_strategy[bogus]": "1"}, "chunking_strategy"),
        ({"model": "whisper-1", "stream": "maybe"}, "stream"),
        ({"model": "whisper-1", "response_format": "diarized_json"}, "response_format"),
        ({}, "model"),
        ({"model": "  "}, "model"),
    ],
)
def test_invalid_fields_are_400_naming_the_field(http, data, param):
    assert_envelope(post(http, data), 400, param)


def test_unknown_model_is_404(http, client):
    assert_envelope(post(http, {"model": "whisper-9000"}), 404, "model", "model_not_found")
    with pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(file=open(JFK, "rb"), model="../../etc/passwd")
    assert_envelope(http.get("/v1/models/not-a-model"), 404, "model", "model_not_found")


def test_model_name_is_never_a_path(http):
    for name in ["/etc", "../models", str(DATA), "Systran/faster-whisper-small", "large-v3"]:
        assert_envelope(post(http, {"model": name}), 404, "model", "model_not_found")


def test_translation_rejects_language_free_formats(http):
    assert_envelope(post(http, {"model": "whisper-1", "response_format": "diarized_json"}, url="/v1/audio/translations"),
                    400, "response_format")


def test_missing_file_and_text_file_field(http):
    assert_envelope(http.post("/v1/audio/transcriptions", data={"model": "whisper-1"}), 400, "file", "missing_required_parameter")
    assert_envelope(http.post("/v1/audio/transcriptions", data={"model": "whisper-1", "file": "hello"}), 400, "file")
    assert_envelope(http.post("/v1/audio/transcriptions", json={"model": "whisper-1"}), 400, "file")


@pytest.mark.parametrize(
    "name, content",
    [("empty", b""), ("random bytes", bytes(range(256)) * 64), ("text", b"this is not audio at all\n" * 100),
     ("RIFF header only", b"RIFF\x24\x00\x00\x00WAVEfmt ")],
)
def test_undecodable_audio_is_400(http, name, content):
    assert_envelope(post(http, {"model": "whisper-1"}, content=content), 400, "file", "invalid_audio")


@pytest.mark.parametrize("name", ["empty_file.wav", "zero_samples.wav", "truncated_header.wav"])
def test_broken_shared_files_are_400(http, name):
    path = shared(f"formats/edge_cases/{name}")
    assert_envelope(post(http, {"model": "whisper-1"}, path=path), 400, "file", "invalid_audio")


def test_oversized_upload_is_413(http):
    big = b"\0" * (26 * 1024 * 1024)
    assert_envelope(post(http, {"model": "whisper-1"}, content=big), 413, "file", "request_too_large")


def test_unknown_route_and_method_use_the_envelope(http):
    assert_envelope(http.get("/v1/nothing"), 404)
    assert_envelope(http.get("/v1/audio/transcriptions"), 405)


def test_server_still_serves_after_errors(client):
    result = client.audio.transcriptions.create(file=open(JFK, "rb"), model="whisper-1")
    assert wer(references()["jfk.wav"], result.text) <= 0.10


def test_sdk_raises_typed_errors(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(file=("x.wav", b"garbage" * 100), model="whisper-1")
    assert info.value.body["param"] == "file"
