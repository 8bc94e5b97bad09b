"""known_speaker_* validation: every rule answers a 400 naming the field (no server needed)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from server.errors import APIError
from server.known_speakers import check_counts, decode_references
from tests.helpers import DATA, read_wav, wav_bytes

JFK = read_wav(DATA / "jfk.wav")


def url(samples: np.ndarray, mime: str = "audio/wav") -> str:
    return f"data:{mime};base64," + base64.b64encode(wav_bytes(samples)).decode()


def _param(exc: pytest.ExceptionInfo) -> str:
    assert exc.value.status == 400
    return exc.value.param


@pytest.mark.parametrize(
    ("names", "refs", "param"),
    [
        (["a"], [], "known_speaker_references"),
        (["a", "b"], ["x"], "known_speaker_references"),
        (["a", "b", "c", "d", "e"], ["x"] * 5, "known_speaker_names"),
        ([""], ["x"], "known_speaker_names"),
        (["a", "a"], ["x", "y"], "known_speaker_names"),
        (["n" * 65], ["x"], "known_speaker_names"),
        (["a"] * 5, [], "known_speaker_names"),
        ([], ["x"] * 5, "known_speaker_references"),
        (["a"], ["data:audio/wav;base64," + "A" * 2000], "known_speaker_references"),  # over max_bytes
    ],
)
def test_count_name_and_size_rules(names, refs, param):
    with pytest.raises(APIError) as exc:
        check_counts(names, refs, max_count=4, max_bytes=1000)
    assert _param(exc) == param


@pytest.mark.parametrize(
    "reference",
    [
        "not a data url",
        "data:audio/wav,plain-not-base64",
        "data:audio/wav;base64,!!!notbase64!!!",
        "data:text/plain;base64," + base64.b64encode(b"hello").decode(),
        "data:audio/wav;base64,",
        "data:audio/wav;base64," + base64.b64encode(b"RIFF\x00\x00garbage" * 50).decode(),
        url(JFK[: 16000 * 1]),  # 1 s: too short
        url(JFK),  # 11 s: too long
    ],
)
def test_bad_references_are_refused(reference):
    with pytest.raises(APIError) as exc:
        decode_references(["agent"], [reference])
    assert _param(exc) == "known_speaker_references"


def test_a_good_reference_decodes_to_16k_mono():
    (speaker,) = decode_references(["agent"], [url(JFK[: 16000 * 3])])
    assert speaker.name == "agent" and len(speaker.samples) == 48000
