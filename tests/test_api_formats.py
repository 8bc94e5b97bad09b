"""Every container and codec in ../shared/data/formats transcribes to its reference."""

from __future__ import annotations

import pytest

from tests.helpers import SHARED, read_tsv, shared, wer


def _format_rows():
    path = SHARED / "formats" / "references.tsv"
    if not path.exists():
        return [pytest.param(None, id="shared-data-missing")]
    rows = [r for r in read_tsv(path) if r["file"].startswith("audio/")]
    return [pytest.param(r, id=r["file"].split("/", 1)[1]) for r in rows]


@pytest.mark.parametrize("row", _format_rows())
def test_every_audio_format(client, row):
    if row is None:
        pytest.skip("shared data not present")
    path = shared("formats/" + row["file"])
    result = client.audio.transcriptions.create(file=open(path, "rb"), model="whisper-1", response_format="verbose_json")
    assert result.duration == pytest.approx(float(row["duration_s"]), abs=0.5)
    reference = row["expected"]
    if "(full text" in reference:  # the long sonnet: score its first line only
        reference = reference.split(" ... ")[0]
        hypothesis = " ".join(result.text.split()[: len(reference.split())])
    else:
        hypothesis = result.text
    assert wer(reference, hypothesis) <= 0.35, result.text


def test_corrupt_last_frame_still_transcribes(client):
    path = shared("formats/edge_cases/p001_corrupt_last_frame.flac")
    result = client.audio.transcriptions.create(file=open(path, "rb"), model="whisper-1")
    assert wer("One. From fairest creatures we desire increase, that thereby beauty's rose might never die.", result.text) <= 0.35


def test_stereo_is_mixed_down(client):
    path = shared("formats/edge_cases/stereo_two_talkers.wav")
    result = client.audio.transcriptions.create(file=open(path, "rb"), model="whisper-1", response_format="verbose_json")
    assert result.duration == pytest.approx(5.0, abs=0.05)
    assert result.text  # two talkers at once on two channels: some speech is recognised from the mix
