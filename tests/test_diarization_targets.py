"""Diarization accuracy on real speech against reference RTTM: the targets of the diarization issue.

The engine is called directly (the end-to-end tests in test_api_diarization.py go through the server);
DER is pyannote.metrics' with no collar and overlapped speech counted. pyannote's sample is committed
in tests/data; the LibriSpeech mixes and enrolment clips come from ../shared/data and skip without it.
scripts/eval_diarization prints the same figures and more.

These bounds are regression guards, not accuracy claims: the mixes (mix_3spk above all: DER bound 5% against
4.4% measured, naming 95% against 95.4%) are the files the turn-edge algorithm was tuned on, so passing here
says nothing about unseen audio. Accuracy claims belong to files held out from tuning (the diarization
issue's tuning/test split), not to this file.
"""

from __future__ import annotations

import functools

import pytest

pytest.importorskip("pyannote.audio")

from pyannote.metrics.diarization import DiarizationErrorRate  # noqa: E402

from engines.audio import decode_audio  # noqa: E402
from tests.diarization_scoring import attribution, hypothesis, read_rttm  # noqa: E402
from tests.helpers import DATA, shared  # noqa: E402

MIXES = "diarization/constructed"


@pytest.fixture(scope="module")
def settings():
    from server.settings import Settings

    return Settings()


@pytest.fixture(scope="module")
def diarizer(settings):
    from server.app import build_registry

    return build_registry(settings).diarizer()


@pytest.fixture(scope="module")
def diarize(diarizer):
    @functools.cache
    def run(wav: str):
        return diarizer.diarize(decode_audio(wav).samples)

    return lambda path: run(str(path))


def _files(name: str):
    if name == "sample":
        return DATA / "diarization" / "sample.wav", DATA / "diarization" / "sample.rttm"
    return shared(f"{MIXES}/{name}.wav"), shared(f"{MIXES}/{name}.rttm")


# The overlap-aware regions, no collar. sample scored 5.1% until round 7; since the regions follow the turn steps
# (docs/diarization-evaluation.md, round 7) it scores 8.0%: round 4's reassignment gives one 0.7 s turn of the
# second voice (7.6-8.3 s) to the first, as the exclusive turns have done since round 4.
@pytest.mark.parametrize(("name", "bound"), [("sample", 0.09), ("mix_2spk_mf", 0.05), ("mix_3spk", 0.05)])
def test_der_and_speaker_count(diarize, name, bound):
    wav, rttm = _files(name)
    reference = read_rttm(rttm)
    result = diarize(wav)
    der = DiarizationErrorRate(collar=0.0, skip_overlap=False)(reference, hypothesis(result.regions, {}))
    assert der < bound, f"{name}: DER {der:.1%}"
    assert len(result.speakers) == len(reference.labels())


@pytest.mark.parametrize(
    ("name", "enrolled"),
    [
        ("mix_3spk", ["LS2033", "LS3331", "LS2609"]),
        ("mix_3spk", ["LS2033", "LS3331"]),
        ("mix_2spk_mf", ["LS1998"]),
    ],
)
def test_known_speakers_carry_their_names(diarize, diarizer, name, enrolled):
    """With one enrolment clip per name (as a request sends them), 95% of each enrolled speaker's time
    carries the right name, and no unenrolled speaker's time ever carries an enrolled name."""
    wav, rttm = _files(name)
    result = diarize(wav)
    references = {speaker: diarizer.embed(decode_audio(str(shared(f"{MIXES}/refs/{speaker}_ref1.flac"))).samples)
                  for speaker in enrolled}
    turns, names = diarizer.known_speakers(decode_audio(str(wav)).samples, result, references)
    share, stolen = attribution(read_rttm(rttm), hypothesis(turns, names), enrolled)
    assert share >= 0.95, f"{name} {enrolled}: {share:.1%} of enrolled speech named right"
    assert stolen == 0.0


AMI = "diarization/real/ami_excerpts"


# (excerpt, speakers found may differ from the true count by, DER bound). Measured (docs/diarization-evaluation.md,
# round 2: spectral clustering, then split / dissolve / merge): dev00 2 of 2 speakers, DER 28.7%; dev01 1 of 2, DER
# 47.1% (round 1: 3 of 2, 38.8%; 2 of 2, 60.9%: the merge that fixed the over-split also joins dev01's two voices).
# Round 7 (the regions follow the turn steps): dev00 9.4% (the steps' corrections now reach the regions), dev01
# 47.1%. The targets (count exact, DER <= 15%) are not met on dev01: these are regression bounds with a margin.
@pytest.mark.parametrize(("name", "count_slack", "bound"), [("dev00", 0, 0.15), ("dev01", 1, 0.55)])
def test_ami_excerpts_with_five_seconds_per_speaker(diarize, name, count_slack, bound):
    """Recordings it was never tuned on (issue 19): the two AMI excerpts where every speaker says 5 s or more.

    DER with a 0.25 s collar, overlap scored, over 0-30 s (the excerpts' UEM).
    """
    from pyannote.core import Segment, Timeline

    reference = read_rttm(shared(f"{AMI}/ami_excerpts.rttm"), name)
    result = diarize(shared(f"{AMI}/{name}.wav"))
    der = DiarizationErrorRate(collar=0.25, skip_overlap=False)(
        reference, hypothesis(result.regions, {}), uem=Timeline([Segment(0.0, 30.0)]))
    assert abs(len(result.speakers) - len(reference.labels())) <= count_slack, f"{name}: {result.speakers}"
    assert der < bound, f"{name}: DER {der:.1%}"


def test_the_turns_follow_the_voices_on_ami_dev00(diarize):
    """The exclusive turns (what words and diarized_json segments are cut from) are cut where the voice changes.

    dev00 (AMI, two speakers, never tuned on): before round 5's turn split (docs/diarization-evaluation.md), the
    turns scored DER 28.7% (0.25 s collar) with the speaker count right, because one speaker's replies lay inside
    the other's turns; with it, 8.9% (1.5 s windows, round 5) and 9.4% (0.75 s windows, round 6). Off
    (OYEZ_DIARIZATION__TURN_SPLIT_WINDOW_S=0), this fails.
    """
    from pyannote.core import Segment, Timeline

    reference = read_rttm(shared(f"{AMI}/ami_excerpts.rttm"), "dev00")
    result = diarize(shared(f"{AMI}/dev00.wav"))
    der = DiarizationErrorRate(collar=0.25, skip_overlap=False)(
        reference, hypothesis(result.turns, {}), uem=Timeline([Segment(0.0, 30.0)]))
    assert len(result.speakers) == 2, result.speakers
    assert der < 0.15, f"dev00 turns: DER {der:.1%}"
