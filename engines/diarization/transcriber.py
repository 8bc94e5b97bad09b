"""Speech-to-text with speaker labels: diarize the audio, transcribe it with word timings,
give each word the speaker talking over it, and split segments where the speaker changes.

Diarization runs first (it needs the whole recording, and costs a fraction of the
transcription); segments then stream out as the decoder produces them.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import replace
from typing import Iterable, Iterator, Sequence

from engines.audio import Audio
from engines.diarization.speakers import (
    SpeakerLabeler, SpeakerRuns, SpeakerTimeline, SpeakerTurn, overlapped_regions,
)
from engines.types import Segment, TranscribeOptions, TranscriptionStream, Word

log = logging.getLogger("oyez.diarize")

# How far a segment's edge may move out to its speaker's turn edge: Whisper's word times are often
# a few hundred ms off, while more than a second of turn without words is speech Whisper did not
# transcribe, which no segment should claim.
MAX_EDGE_EXTENSION_S = 1.0
_EPS = 1e-6  # float slack where a segment edge sits exactly on a turn edge


class DiarizingTranscriber:
    """Combines a speech engine (faster-whisper) with a diarizer (pyannote)."""

    def __init__(self, asr, diarizer):
        self.asr = asr
        self.diarizer = diarizer

    def check(self, options: TranscribeOptions) -> None:
        self.asr.check(options)

    def decoding(self) -> int:
        """Requests decoding speech on this engine's Whisper now."""
        return self.asr.decoding()

    def close(self) -> None:
        """Unload the Whisper engine; the diarization pipeline is shared and stays."""
        self.asr.close()

    def transcribe(self, audio: Audio, options: TranscribeOptions) -> TranscriptionStream:
        diarization = self.diarizer.diarize(audio.samples, num_speakers=options.num_speakers,
                                            min_speakers=options.min_speakers, max_speakers=options.max_speakers)
        references = {k.name: self.diarizer.embed(k.samples) for k in options.known_speakers}
        turns, known = self.diarizer.known_speakers(audio.samples, diarization, references)
        log.info(
            "diarized %.1fs in %.2fs: %d speakers, %d turns, known %s, %d turns named on their own",
            audio.duration, diarization.seconds, len(diarization.speakers), len(diarization.turns),
            {name: label for label, name in known.items()} or "none",
            sum(a.speaker != b.speaker for a, b in zip(turns, diarization.turns)),
        )
        inner = self.asr.transcribe(audio, replace(options, word_timestamps=True))
        overlap_s = self.diarizer.config.segment_overlap_s
        voices = diarization.regions
        if overlap_s > 0 and turns != diarization.turns:  # names per turn moved turns: the voices follow them
            voices = overlapped_regions(turns, diarization.turns, diarization.regions)
        # relabelled, not rebuilt: long audio updates the inner stream's usage window by window.
        return inner.relabelled(split_by_speaker(inner, turns, SpeakerLabeler(known),
                                                 voices=voices, overlap_s=overlap_s))


def split_by_speaker(
    segments: Iterable[Segment], turns: list[SpeakerTurn], labeler: SpeakerLabeler,
    voices: Sequence[SpeakerTurn] = (), overlap_s: float = 0.0,
) -> Iterator[Segment]:
    """Label segments with speakers, splitting a segment wherever its words change speaker.

    Each word goes to the speaker who talks most over its time span (the turns are
    exclusive, so no word is duplicated), and each segment's times are then fitted to its
    speaker's turns (`fit_to_turns`) and, with `overlap_s`, grown over its speaker's voice
    beneath the neighbours' (`widen_over_voice`; `voices` is the diarization with overlapped
    speech). Public labels are given in order of first appearance in the output; segments
    are renumbered in output order.
    """
    index = 0
    timeline = SpeakerTimeline(turns)
    try:
        pieces = (piece for segment in segments for piece in _split(segment, timeline))
        fitted = fit_to_turns(pieces, timeline)
        if overlap_s > 0 and voices:
            fitted = widen_over_voice(fitted, SpeakerRuns(voices), SpeakerRuns(turns), overlap_s)
        for piece in fitted:
            yield replace(piece, id=index, speaker=labeler.label(piece.speaker))
            index += 1
    finally:
        close = getattr(segments, "close", None)
        if close:
            close()


def fit_to_turns(segments: Iterable[Segment], timeline: SpeakerTimeline,
                 max_extension: float = MAX_EDGE_EXTENSION_S) -> Iterator[Segment]:
    """Segments with their start and end moved to the edges of their speaker's turns.

    A segment's times come from Whisper's word timings, which often start late or end early
    by a few hundred ms, or run into the silence or the next speaker's turn; the diarization's
    turn edges are where the voice is. Each edge moves to the first / last turn of the segment's
    speaker that overlaps it: inwards as far as needed, outwards at most `max_extension`, never
    before the previous segment's end nor past the next one's start (so one segment is held
    back until the next is known). A segment that overlaps no turn of its speaker is left as is.
    """
    previous_end, pending = 0.0, None
    for segment in segments:
        if pending is not None:
            pending = _fit(pending, timeline, previous_end, segment.start, max_extension)
            previous_end = pending.end
            yield pending
        pending = segment
    if pending is not None:
        yield _fit(pending, timeline, previous_end, float("inf"), max_extension)


def widen_over_voice(segments: Iterable[Segment], voices: SpeakerRuns, turns: SpeakerRuns,
                     max_s: float) -> Iterator[Segment]:
    """Segments grown, at most `max_s` each way, over the stretch where their speaker's voice is heard around them.

    The exclusive turns give overlapped speech to one voice only, so a segment stops where another speaker cuts in
    although its own speaker talks on beneath. `voices` (the diarization with overlapped speech) still hear it
    there: each edge moves out to the end of that stretch. Segments of two speakers may then overlap in time,
    as the voices did. An edge never crosses a segment of its own speaker, nor reaches into another of that
    speaker's exclusive `turns` (whose words are another segment's), and segments stay in order of their starts
    (one segment is held back until the next is known). Chosen on the simulated tuning half
    (docs/diarization-evaluation.md, round 8).
    """
    pending, previous_start, last_end = None, 0.0, {}  # last_end: speaker -> end of their last segment out
    for segment in itertools.chain(segments, [None]):
        if pending is not None:
            widened = _widen(pending, segment, previous_start, last_end.get(pending.speaker, 0.0), voices, turns,
                             max_s)
            previous_start, last_end[widened.speaker] = widened.start, widened.end
            yield widened
        pending = segment


def _widen(segment: Segment, following: Segment | None, previous_start: float, own_end: float,
           voices: SpeakerRuns, turns: SpeakerRuns, max_s: float) -> Segment:
    speaker, start, end = segment.speaker, segment.start, segment.end
    own_before = turns.last_end_by(speaker, start + _EPS)
    low = min(start, max(previous_start, own_before if own_before is not None else 0.0))
    high = following.start if following is not None and following.speaker == speaker else float("inf")
    own_after = turns.first_start_from(speaker, end - _EPS)
    high = max(end, min(high, own_after if own_after is not None else float("inf")))
    if (stretch := voices.around(speaker, start)) is not None:
        start = max(stretch[0], start - max_s, low)
    if (stretch := voices.around(speaker, end)) is not None:
        end = min(stretch[1], end + max_s, high)
    start = max(start, min(own_end, end))  # never back over this speaker's previous segment, which may reach past it
    return segment if (start, end) == (segment.start, segment.end) else replace(segment, start=start, end=end)


def _fit(segment: Segment, timeline: SpeakerTimeline, not_before: float, not_after: float,
         max_extension: float) -> Segment:
    span = timeline.span_of(segment.speaker, segment.start, segment.end) if segment.speaker else None
    if span is None:
        return segment
    start = max(span[0], segment.start - max_extension, not_before)
    end = min(span[1], segment.end + max_extension, not_after)
    if end <= start:
        return segment
    return replace(segment, start=start, end=end)


def _split(segment: Segment, timeline: SpeakerTimeline) -> list[Segment]:
    fallback = "unknown"  # no speech turn found at all: one anonymous speaker
    if not segment.words:
        return [replace(segment, speaker=timeline.speaker_at(segment.start, segment.end) or fallback)]
    groups: list[tuple[str, list[Word]]] = []
    for word in segment.words:
        speaker = timeline.speaker_at(word.start, word.end) or fallback
        if groups and groups[-1][0] == speaker:
            groups[-1][1].append(word)
        else:
            groups.append((speaker, [word]))
    if len(groups) == 1:
        return [replace(segment, speaker=groups[0][0])]
    pieces = []
    counts = _share(segment.text_token_count, [len(words) for _, words in groups])
    for (speaker, words), count in zip(groups, counts):
        pieces.append(replace(
            segment,
            start=words[0].start,
            end=words[-1].end,
            text=" " + " ".join(w.word for w in words),
            tokens=[],  # token ids cannot be split by word reliably; only verbose_json shows them
            text_token_count=count,
            words=words,
            logprobs=[],
            speaker=speaker,
        ))
    return pieces


def _share(total: int, weights: list[int]) -> list[int]:
    """Split an integer total in proportion to weights, summing exactly to total."""
    whole = sum(weights) or 1
    shares = [total * w // whole for w in weights]
    shares[-1] += total - sum(shares)
    return shares
