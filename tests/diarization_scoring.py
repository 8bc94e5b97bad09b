"""Scoring diarization against reference RTTM, shared by tests and scripts/eval_diarization.

Needs pyannote.core (the `diarize` extra); import it only where diarization is installed.
"""

from __future__ import annotations

from pathlib import Path

from pyannote.core import Annotation, Segment, Timeline

from engines.diarization.speakers import SpeakerLabeler, SpeakerTurn


def read_rttm(path: Path, uri: str | None = None) -> Annotation:
    """Reference turns of an RTTM file; of one recording (`uri`) when it holds several."""
    annotation = Annotation(uri=uri or path.stem)
    for line in path.read_text(encoding="utf-8").splitlines():
        f = line.split()
        if f and f[0] == "SPEAKER" and (uri is None or f[1] == uri):
            start, duration = float(f[3]), float(f[4])
            annotation[Segment(start, start + duration)] = f[7]
    return annotation


def hypothesis(turns: list[SpeakerTurn], names: dict[str, str]) -> Annotation:
    """The turns as an annotation, labelled as the server labels them (known names, then A, B, ...)."""
    labeler = SpeakerLabeler(names)
    annotation = Annotation()
    for t in turns:
        annotation[Segment(t.start, t.end)] = labeler.label(t.speaker)
    return annotation


def attribution(reference: Annotation, hyp: Annotation, enrolled: list[str]) -> tuple[float, float]:
    """(share of enrolled speakers' time carrying their name, seconds of unenrolled speech given an enrolled name)."""
    right = total = stolen = 0.0
    for segment, _, speaker in reference.itertracks(yield_label=True):
        for hyp_segment, _, label in hyp.crop(segment).itertracks(yield_label=True):
            overlap = (hyp_segment & segment).duration
            if speaker in enrolled:
                right += overlap if label == speaker else 0.0
            elif label in enrolled:
                stolen += overlap
        if speaker in enrolled:
            total += segment.duration
    return (right / total if total else float("nan")), stolen


def one_at_a_time(reference: Annotation) -> Annotation:
    """The reference with one speaker at a time: where voices overlap, the one whose turn began first.

    Its DER is the floor of any one-speaker-at-a-time output (the exclusive turns; the `diarized_json` segments until
    they could overlap, round 8): the overlapped speech it cannot cover.
    """
    exclusive = Annotation(uri=reference.uri)
    taken = Timeline()
    for segment, track, speaker in sorted(reference.itertracks(yield_label=True), key=lambda x: (x[0].start, x[0].end)):
        for free in Timeline([segment]).extrude(taken):
            exclusive[free, track] = speaker
        taken = taken.union(Timeline([segment])).support()
    return exclusive
