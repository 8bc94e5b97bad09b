"""Unit: the capability table decides what each model accepts (server/catalogue.py, server/validation.py)."""

from __future__ import annotations

import io

import pytest
from starlette.datastructures import FormData, Headers, UploadFile

from engines.types import AudioInfo, Segment, TranscriptionStream, VadParams
from server.catalogue import CAPABILITIES, DIARIZE_MODEL, PUBLIC_MODELS, capabilities_of
from server.errors import APIError
from server.params import parse_transcription
from server.validation import check_request, transcribe_options


def request(*items, task="transcribe"):
    upload = UploadFile(io.BytesIO(b"RIFF"), filename="a.wav", headers=Headers({"content-type": "audio/x-wav"}))
    return parse_transcription(FormData([("file", upload), *items]), task)


def refused(req, param):
    with pytest.raises(APIError) as info:
        check_request(req, capabilities_of(req.model))
    assert info.value.status == 400 and info.value.param == param
    return info.value.message


def test_one_row_per_public_name_and_billing_from_the_table():
    assert set(CAPABILITIES) == set(PUBLIC_MODELS) | {DIARIZE_MODEL}
    assert capabilities_of("whisper-1").billing == "duration" and capabilities_of(DIARIZE_MODEL).billing == "duration"
    assert {capabilities_of(m).billing for m in PUBLIC_MODELS if m.startswith("gpt-4o")} == {"tokens"}
    assert capabilities_of("an-operator-added-name") == capabilities_of("whisper-1")


@pytest.mark.parametrize("fmt", ["json", "text", "srt", "vtt"])
@pytest.mark.parametrize("granularity", ["word", "segment"])
def test_timestamp_granularities_need_verbose_json(fmt, granularity):
    """OpenAI answers 400 here (speaches' recorded tests); Oyez used to ignore the field."""
    req = request(("model", "whisper-1"), ("response_format", fmt), ("timestamp_granularities[]", granularity))
    assert "verbose_json" in refused(req, "timestamp_granularities")
    check_request(request(("model", "whisper-1"), ("response_format", "verbose_json"),
                          ("timestamp_granularities[]", granularity)), capabilities_of("whisper-1"))


def test_diarize_model_rules():
    diarize = ("model", DIARIZE_MODEL)
    assert "translations" in refused(request(diarize, task="translate"), "model")
    refused(request(diarize, ("response_format", "verbose_json")), "response_format")
    refused(request(diarize, ("prompt", "hello")), "prompt")
    refused(request(diarize, ("include[]", "logprobs")), "include")
    for fmt in ("json", "text", "srt", "vtt", "diarized_json"):
        check_request(request(diarize, ("response_format", fmt)), capabilities_of(DIARIZE_MODEL))
    refused(request(("model", "whisper-1"), ("response_format", "diarized_json")), "response_format")
    refused(request(("model", "whisper-1"), ("known_speaker_names[]", "a")), "known_speaker_names")


def test_vad_field_and_chunking_strategy():
    whisper = capabilities_of("whisper-1")
    opts = lambda *items, default=True: transcribe_options(request(("model", "whisper-1"), *items), whisper, default)  # noqa: E731
    assert opts().vad == VadParams() and opts(default=False).vad is None  # the server default
    assert opts(("vad", "false")).vad is None and opts(("vad", "true"), default=False).vad == VadParams()
    server_vad = opts(("chunking_strategy[type]", "server_vad"), ("chunking_strategy[threshold]", "0.3"))
    assert server_vad.vad.threshold == 0.3
    refused(request(("model", "whisper-1"), ("vad", "false"), ("chunking_strategy", "auto")), "vad")
    with pytest.raises(APIError):
        request(("model", "whisper-1"), ("vad", "maybe"))
    # The diarize model takes `auto` when no chunking_strategy is given (OpenAI requires one past 30 s).
    diarize = transcribe_options(request(("model", DIARIZE_MODEL)), capabilities_of(DIARIZE_MODEL), False)
    assert diarize.vad == VadParams()


def test_a_relabelled_stream_reports_the_usage_its_source_learns_window_by_window():
    """The diarize model relabels the Whisper stream; long audio updates the source's `audio` as each
    window finishes, so usage must come from the source (it used to be copied once, at the start)."""
    seg = Segment(id=0, seek=0, start=0.0, end=1.0, text=" hi", tokens=[1], temperature=0.0, avg_logprob=0.0,
                  compression_ratio=1.0, no_speech_prob=0.0)

    def windows():
        yield seg
        source.audio = AudioInfo(duration=900.0, speech_duration=850.0)  # the second window is done
        yield seg

    source = TranscriptionStream(windows(), language="en", language_probability=1.0,
                                 audio=AudioInfo(duration=900.0, speech_duration=280.0), prompt_tokens=0,
                                 task="transcribe")
    labelled = source.relabelled(iter(source))
    transcript = labelled.collect()
    assert transcript.audio.speech_duration == 850.0 and len(transcript.segments) == 2
