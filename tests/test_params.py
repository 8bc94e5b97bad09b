"""Unit: multipart forms as the SDKs really send them become typed requests."""

from __future__ import annotations

import io

import pytest
from starlette.datastructures import FormData, Headers, UploadFile

from engines.types import VadParams
from server.errors import APIError
from server.params import SERVER_VAD_DEFAULTS, parse_transcription


def form(*items):
    upload = UploadFile(io.BytesIO(b"RIFF"), filename="a.wav", headers=Headers({"content-type": "audio/x-wav"}))
    return FormData([("file", upload), *items])


def test_defaults():
    req = parse_transcription(form(("model", "whisper-1")))
    assert req.response_format == "json" and req.temperature == 0.0 and req.language is None
    assert req.granularities == {"segment"} and not req.include_logprobs and not req.stream
    assert req.chunking.kind == "default"


def test_sdk_v3_bracketed_arrays_and_objects():
    req = parse_transcription(form(
        ("model", "gpt-4o-transcribe"), ("include[]", "logprobs"),
        ("timestamp_granularities[]", "word"), ("timestamp_granularities[]", "segment"),
        ("known_speaker_names[]", "agent"), ("known_speaker_names[]", "customer"),
        ("known_speaker_references[]", "data:audio/wav;base64,AAA"), ("known_speaker_references[]", "data:audio/wav;base64,BBB"),
        ("chunking_strategy[type]", "server_vad"), ("chunking_strategy[threshold]", "0.4"),
        ("chunking_strategy[silence_duration_ms]", "300"), ("chunking_strategy[prefix_padding_ms]", "100"),
        ("stream", "true"), ("temperature", "0.2"), ("language", "EN"),
    ))
    assert req.include_logprobs and req.granularities == {"word", "segment"}
    assert req.known_speaker_names == ["agent", "customer"]
    assert req.known_speaker_references == ["data:audio/wav;base64,AAA", "data:audio/wav;base64,BBB"]
    assert req.chunking.kind == "server_vad"
    assert req.chunking.vad == VadParams(threshold=0.4, speech_pad_ms=100, min_silence_duration_ms=300)
    assert req.stream and req.temperature == 0.2 and req.language == "en"


def test_bare_and_indexed_names():
    req = parse_transcription(form(("model", "whisper-1"), ("include", "logprobs"),
                                   ("timestamp_granularities[0]", "word")))
    assert req.include_logprobs and req.granularities == {"word"}


def test_chunking_auto_and_json_string():
    assert parse_transcription(form(("model", "m"), ("chunking_strategy", "auto"))).chunking.kind == "auto"
    req = parse_transcription(form(("model", "m"), ("chunking_strategy", '{"type": "server_vad", "threshold": 0.7}')))
    assert req.chunking.vad == VadParams(0.7, SERVER_VAD_DEFAULTS.speech_pad_ms, SERVER_VAD_DEFAULTS.min_silence_duration_ms)
    assert parse_transcription(form(("model", "m"), ("chunking_strategy", '{"type": "auto"}'))).chunking.kind == "auto"


def test_translation_ignores_language_and_rejects_diarized_json():
    req = parse_transcription(form(("model", "m"), ("language", "fr")), task="translate")
    assert req.language is None and req.task == "translate"
    with pytest.raises(APIError) as info:
        parse_transcription(form(("model", "m"), ("response_format", "diarized_json")), task="translate")
    assert info.value.param == "response_format"


@pytest.mark.parametrize("items, param", [
    ((("model", "m"), ("chunking_strategy[type]", "server_vad"), ("chunking_strategy[prefix_padding_ms]", "1.5")), "chunking_strategy"),
    ((("model", "m"), ("chunking_strategy", "[1, 2]")), "chunking_strategy"),
    ((("model", "m"), ("temperature", "inf")), "temperature"),
    ((("model", "m"), ("stream", "perhaps")), "stream"),
])
def test_rejections_name_the_field(items, param):
    with pytest.raises(APIError) as info:
        parse_transcription(form(*items))
    assert info.value.status == 400 and info.value.param == param


def test_missing_file():
    with pytest.raises(APIError) as info:
        parse_transcription(FormData([("model", "whisper-1")]))
    assert info.value.param == "file" and info.value.code == "missing_required_parameter"


def test_speaker_count_fields_are_an_oyez_extension():
    assert not parse_transcription(form(("model", "m"))).speakers  # OpenAI's clients send none: estimated
    req = parse_transcription(form(("model", "m"), ("min_speakers", "2"), ("max_speakers", " 5 ")))
    assert (req.speakers.num, req.speakers.min, req.speakers.max) == (None, 2, 5)
    assert parse_transcription(form(("model", "m"), ("num_speakers", "3"))).speakers.num == 3


@pytest.mark.parametrize("items, param", [
    ((("num_speakers", "two"),), "num_speakers"),
    ((("num_speakers", "0"),), "num_speakers"),
    ((("max_speakers", "33"),), "max_speakers"),
    ((("min_speakers", "1.5"),), "min_speakers"),
    ((("min_speakers", "4"), ("max_speakers", "2")), "min_speakers"),
    ((("num_speakers", "6"), ("max_speakers", "4")), "num_speakers"),
])
def test_bad_speaker_counts_name_the_field(items, param):
    with pytest.raises(APIError) as info:
        parse_transcription(form(("model", "m"), *items))
    assert info.value.status == 400 and info.value.param == param
