"""Known-speaker matching, public labels, word-to-speaker assignment and segment splitting (no models)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("scipy")

from engines.diarization.transcriber import fit_to_turns, split_by_speaker  # noqa: E402
from engines.diarization.speakers import (  # noqa: E402
    SpeakerLabeler, SpeakerRuns, SpeakerTimeline, SpeakerTurn, match_known_speakers, name_speakers, name_turns,
    overlapped_regions, reassign_turns, speaker_at, split_turns,
)
from engines.types import Segment, Word  # noqa: E402


def _unit(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle), 0.0])


def test_a_name_goes_to_every_cluster_of_its_voice_and_two_names_never_share_one():
    centroids = {"c0": _unit(0.0), "c1": _unit(0.1), "c2": _unit(1.5)}
    references = {"alice": np.stack([_unit(0.05), _unit(0.0)]), "bob": _unit(1.45)[None]}
    names = match_known_speakers(centroids, references, threshold=0.9)
    # c0 and c1 are one voice split in two: both carry alice's name; c2 is bob.
    assert names == {"c0": "alice", "c1": "alice", "c2": "bob"}
    # A cluster that resembles two references takes the nearer name only.
    names = match_known_speakers({"c0": _unit(0.0)}, {"alice": _unit(0.05)[None], "carol": _unit(-0.2)[None]}, 0.9)
    assert names == {"c0": "alice"}


def test_same_voice_keeps_a_second_cluster_that_is_another_voice_unnamed():
    centroids = {"c0": _unit(0.0), "c1": _unit(0.6)}
    references = {"alice": _unit(0.2)[None]}
    assert match_known_speakers(centroids, references, threshold=0.8) == {"c0": "alice", "c1": "alice"}
    # c1 is 0.6 rad from alice's best cluster (cosine 0.83): not the same voice at 0.9.
    assert match_known_speakers(centroids, references, threshold=0.8, same_voice=0.9) == {"c0": "alice"}


def test_unknown_voice_never_gets_a_name():
    names = match_known_speakers({"c0": _unit(0.0)}, {"alice": _unit(1.2)[None]}, threshold=0.5)
    assert names == {}


def test_a_name_below_the_threshold_goes_to_its_best_unnamed_voice_above_the_floor():
    # Room and noise lower every similarity: bob's voice reaches 0.6 with his clean clip, carol's 0.45.
    centroids = {"c0": _unit(0.0), "c1": _unit(np.arccos(0.6)), "c2": _unit(-1.4)}
    references = {"alice": _unit(0.0)[None], "bob": _unit(np.arccos(0.6) + np.arccos(0.6))[None],
                  "carol": _unit(-1.4 - np.arccos(0.45))[None]}
    assert match_known_speakers(centroids, references, threshold=0.9) == {"c0": "alice"}
    names = match_known_speakers(centroids, references, threshold=0.9, floor=0.3)
    # alice keeps c0 (above the threshold, never re-paired); bob and carol take the voices left, one each.
    assert names == {"c0": "alice", "c1": "bob", "c2": "carol"}
    # Under the floor, no name: an absent person's clip never names the guest who resembles nobody.
    guest = {"c0": _unit(0.0), "c1": _unit(2.0)}
    assert match_known_speakers(guest, {"alice": _unit(0.0)[None], "dave": _unit(0.5)[None]},
                                threshold=0.9, floor=0.3) == {"c0": "alice"}


def test_a_turn_moves_to_the_cluster_its_own_voice_is_closest_to():
    turns = [SpeakerTurn(0.0, 2.0, "c0"), SpeakerTurn(2.5, 4.0, "c0"), SpeakerTurn(4.5, 6.0, "c0"),
             SpeakerTurn(6.5, 6.7, "c1")]
    centroids = {"c0": _unit(0.0), "c1": _unit(1.0), "c2": np.full(3, np.nan)}  # c2: no usable centroid
    vectors = [_unit(0.1), _unit(0.9), _unit(0.6), None]
    out = reassign_turns(turns, vectors, centroids)
    # Turn 1 sounds like c1 (cosine 0.99 against 0.62), turn 2 a little more like c1 (0.92 against 0.83);
    # turn 3 has no embedding of its own and keeps its label.
    assert [t.speaker for t in out] == ["c0", "c1", "c1", "c1"]
    assert [(t.start, t.end) for t in out] == [(t.start, t.end) for t in turns]
    assert [t.speaker for t in reassign_turns(turns, vectors, centroids, margin=0.2)] == ["c0", "c1", "c0", "c1"]
    assert reassign_turns(turns, vectors, {"c0": _unit(0.0)}) == turns  # one cluster: nowhere to move


def test_a_turn_is_cut_where_its_windows_sound_like_another_cluster():
    centroids = {"c0": _unit(0.0), "c1": _unit(1.0), "c2": np.full(3, np.nan)}
    # A 4 s turn of c0, windows of 1.5 s every 0.5 s (starts 0.0 .. 2.5): the last three sound like c1.
    turn = SpeakerTurn(10.0, 14.0, "c0")
    windows = [[(10.0 + 0.5 * k, _unit(0.1 if k < 3 else 0.9)) for k in range(6)]]
    out = split_turns([turn], windows, centroids, window_s=1.5, hop_s=0.5)
    # The change sits at the centre of the first c1 window less half a hop: 11.5 + 0.5 = 12.0 s.
    assert out == [SpeakerTurn(10.0, 12.0, "c0"), SpeakerTurn(12.0, 14.0, "c1")]
    # One window in the middle claims only the hop around its centre.
    windows = [[(10.0 + 0.5 * k, _unit(0.9 if k == 2 else 0.1)) for k in range(6)]]
    out = split_turns([turn], windows, centroids, window_s=1.5, hop_s=0.5)
    assert out == [SpeakerTurn(10.0, 11.5, "c0"), SpeakerTurn(11.5, 12.0, "c1"), SpeakerTurn(12.0, 14.0, "c0")]
    # The first window claims from the turn's start; the margin keeps a window that is only a little closer.
    windows = [[(10.0 + 0.5 * k, _unit(0.9 if k == 0 else 0.1)) for k in range(6)]]
    assert split_turns([turn], windows, centroids, 1.5, 0.5)[0] == SpeakerTurn(10.0, 11.0, "c1")  # centre 10.75 + 0.25
    windows = [[(10.0 + 0.5 * k, _unit(0.6 if k == 0 else 0.1)) for k in range(6)]]
    assert split_turns([turn], windows, centroids, 1.5, 0.5, margin=0.2) == [turn]
    # No windows (a short turn), or one usable cluster: the turn stays whole.
    assert split_turns([turn], [[]], centroids, 1.5, 0.5) == [turn]
    assert split_turns([turn], windows, {"c0": _unit(0.0)}, 1.5, 0.5) == [turn]


def test_the_overlap_aware_regions_follow_the_corrected_turns_and_keep_the_second_voice():
    # The reconstruction heard A 0-5 s, B 4-8 s and C 6-7 s; its exclusive turns were A 0-4.5, B 4.5-8.
    regions = [SpeakerTurn(0.0, 5.0, "A"), SpeakerTurn(4.0, 8.0, "B"), SpeakerTurn(6.0, 7.0, "C")]
    before = [SpeakerTurn(0.0, 4.5, "A"), SpeakerTurn(4.5, 8.0, "B")]
    # A turn step gave 2-3 s to C (a reply inside A's turn) and 6.5-8 s of B's turn to A.
    turns = [SpeakerTurn(0.0, 2.0, "A"), SpeakerTurn(2.0, 3.0, "C"), SpeakerTurn(3.0, 4.5, "A"),
             SpeakerTurn(4.5, 6.5, "B"), SpeakerTurn(6.5, 8.0, "A")]
    out = overlapped_regions(turns, before, regions)
    assert out == [
        SpeakerTurn(0.0, 2.0, "A"),
        SpeakerTurn(2.0, 3.0, "C"),  # the correction holds: the regions heard A alone there, so A is not added
        SpeakerTurn(3.0, 5.0, "A"),  # A's turn, then A as the second voice of 4-5 s
        SpeakerTurn(4.0, 6.5, "B"),  # B as the second voice of 4-4.5 s, then B's turn; B lost 6.5-8 s to the step
        SpeakerTurn(6.0, 7.0, "C"),  # the third voice of 6-7 s
        SpeakerTurn(6.5, 8.0, "A"),
    ]
    # A step that gives an overlapped stretch to the other voice heard there (4.5-5 s) keeps the first one as the
    # second voice; where the regions heard B alone (5-6 s), A replaces B.
    swapped = turns[:3] + [SpeakerTurn(4.5, 6.0, "A"), SpeakerTurn(6.0, 8.0, "B")]
    assert overlapped_regions(swapped, before, regions)[2:5] == [
        SpeakerTurn(3.0, 6.0, "A"), SpeakerTurn(4.0, 5.0, "B"), SpeakerTurn(6.0, 8.0, "B")]
    # Time only the regions cover keeps their labels; without regions the turns are returned as they are.
    assert SpeakerTurn(9.0, 9.5, "B") in overlapped_regions(turns, before, regions + [SpeakerTurn(9.0, 9.5, "B")])
    assert overlapped_regions(turns, before, []) == turns


def test_a_turn_of_another_known_voice_inside_a_named_cluster_takes_that_name():
    # c0 is mostly alice; its second turn is bob's voice (the clustering put both in one cluster); c1 is unnamed.
    turns = [SpeakerTurn(0.0, 2.0, "c0"), SpeakerTurn(2.5, 4.0, "c0"), SpeakerTurn(4.5, 6.0, "c1"),
             SpeakerTurn(6.5, 6.7, "c0")]
    references = {"alice": _unit(0.0)[None], "bob": _unit(1.0)[None]}
    known = {"c0": "alice"}
    vectors = {0: _unit(0.1), 1: _unit(0.9), 2: _unit(1.0)}
    out, names = name_turns(turns, vectors, known, references)
    assert [t.speaker for t in out] == ["c0", "known:bob", "c1", "c0"]  # c1 unnamed: left alone; turn 3 not embedded
    assert names == {"c0": "alice", "known:bob": "bob"}
    assert known == {"c0": "alice"}  # the caller's map is not changed
    # When a cluster already carries the name, the turn joins it; a margin keeps a near tie where it was.
    out, names = name_turns(turns, vectors, {"c0": "alice", "c1": "bob"}, references)
    assert [t.speaker for t in out] == ["c0", "c1", "c1", "c0"] and names == {"c0": "alice", "c1": "bob"}
    tie = {1: _unit(0.55)}  # 0.45 rad from bob, 0.55 from alice: closer to bob by under 0.1 in cosine
    assert name_turns(turns, tie, known, references, margin=0.1)[0] == turns
    assert name_turns(turns, tie, known, references, margin=0.0)[0][1].speaker == "known:bob"


def test_name_speakers_embeds_only_long_enough_turns_of_named_clusters():
    turns = [SpeakerTurn(0.0, 2.0, "c0"), SpeakerTurn(2.5, 2.7, "c0"), SpeakerTurn(3.0, 5.0, "c1")]
    centroids = {"c0": _unit(0.0), "c1": _unit(2.5)}
    references = {"alice": _unit(0.0)[None], "bob": _unit(1.0)[None]}
    asked = []

    def embed(turn):
        asked.append(turn.start)
        return _unit(1.0)

    out, names = name_speakers(turns, centroids, references, embed, threshold=0.9, turn_min_s=0.3)
    assert asked == [0.0]  # the 0.2 s turn is too short; c1 has no name to check
    assert [t.speaker for t in out] == ["known:bob", "c0", "c1"]
    asked.clear()
    out, names = name_speakers(turns, centroids, references, embed, threshold=0.9, turn_min_s=0.0)
    assert asked == [] and out == turns and names == {"c0": "alice"}


def test_labeler_orders_letters_by_first_appearance_and_skips_known_names():
    labeler = SpeakerLabeler({"k": "A"})
    assert [labeler.label(x) for x in ["z", "k", "y", "z"]] == ["B", "A", "C", "B"]


def test_speaker_at_takes_the_majority_speaker_or_the_nearest_turn():
    turns = [SpeakerTurn(0.0, 1.0, "s1"), SpeakerTurn(1.0, 3.0, "s2")]
    assert speaker_at(turns, 0.8, 1.5) == "s2"
    assert speaker_at(turns, 0.1, 0.9) == "s1"
    assert speaker_at(turns, 5.0, 5.2) == "s2"  # after the last turn: nearest
    assert speaker_at([], 0.0, 1.0) is None


def test_timeline_lookup_agrees_with_a_scan_of_every_turn():
    rng = np.random.default_rng(1)
    edges = np.cumsum(rng.uniform(0.05, 2.0, 400))
    turns = [SpeakerTurn(float(a), float(b), f"s{rng.integers(3)}")
             for a, b in zip(edges[::2], edges[1::2])]  # exclusive, with gaps between
    timeline = SpeakerTimeline(turns)

    def scan(start, end):
        overlaps = [(min(end, t.end) - max(start, t.start), -i, t.speaker) for i, t in enumerate(turns)]
        best = max(overlaps)
        if best[0] > 0:
            return best[2]
        middle = (start + end) / 2
        return min(turns, key=lambda t: min(abs(t.start - middle), abs(t.end - middle))).speaker

    for start in rng.uniform(-1, edges[-1] + 1, 2000):
        end = start + rng.uniform(0.01, 1.5)
        assert timeline.speaker_at(start, end) == scan(start, end)


def _segment(words: list[tuple[str, float, float]]) -> Segment:
    return Segment(
        id=0, seek=0, start=words[0][1], end=words[-1][2], text=" " + " ".join(w for w, _, _ in words),
        tokens=[1, 2, 3], temperature=0.0, avg_logprob=-0.1, compression_ratio=1.0, no_speech_prob=0.0,
        text_token_count=6, words=[Word(w, s, e, 0.9) for w, s, e in words],
    )


def test_a_speaker_change_inside_a_segment_splits_it():
    turns = [SpeakerTurn(0.0, 2.0, "x"), SpeakerTurn(2.0, 4.0, "y")]
    seg = _segment([("hello", 0.1, 0.5), ("there", 0.6, 1.0), ("hi", 2.2, 2.5), ("you", 2.6, 3.0)])
    out = list(split_by_speaker(iter([seg]), turns, SpeakerLabeler({"y": "agent"})))
    assert [(s.speaker, s.text.strip(), s.id) for s in out] == [("A", "hello there", 0), ("agent", "hi you", 1)]
    # Times fitted to the turns: each piece spans its speaker's turn (within 1 s of its words).
    assert (out[0].start, out[0].end, out[1].start, out[1].end) == (0.0, 2.0, 2.0, 4.0)
    assert sum(s.text_token_count for s in out) == 6
    assert [w.word for s in out for w in s.words] == ["hello", "there", "hi", "you"]  # no word lost or doubled


def test_segment_times_move_to_their_speakers_turn_edges_within_bounds():
    turns = [SpeakerTurn(1.0, 6.0, "x"), SpeakerTurn(6.5, 9.0, "y"), SpeakerTurn(12.0, 20.0, "x")]
    segs = [
        _segment([("late", 1.3, 1.8), ("start", 1.9, 3.0)]),  # Whisper starts 0.3 s late and ends early
        _segment([("and", 3.2, 3.5), ("more", 3.6, 5.4)]),  # the same turn, next Whisper segment
        _segment([("overrun", 6.8, 9.6)]),  # runs 0.6 s past y's turn into silence
        _segment([("ghost", 10.4, 11.0)]),  # in silence, nearest to x's later turn
        _segment([("words", 17.0, 18.0)]),  # x's turn began 5 s earlier: no words there, not claimed
    ]
    timeline = SpeakerTimeline(turns)
    labelled = [replace(seg, speaker=timeline.speaker_at(seg.start, seg.end)) for seg in segs]
    out = list(fit_to_turns(labelled, timeline))
    spans = [(s.speaker, round(s.start, 2), round(s.end, 2)) for s in out]
    assert spans == [
        ("x", 1.0, 3.2),  # back to the turn's start; forward only up to the next segment
        ("x", 3.2, 6.0),  # from the previous end to the turn's end (0.6 s past its last word)
        ("y", 6.5, 9.0),  # cut to y's turn at both ends
        ("x", 10.4, 11.0),  # overlaps no turn of its speaker: unchanged
        ("x", 16.0, 19.0),  # at most 1 s outwards on each side
    ]
    assert [s.text for s in out] == [s.text for s in segs]


def test_segments_grow_over_their_speakers_voice_beneath_another_and_never_over_their_own():
    # x talks 0-10 s; y cuts in at 4-5 s ("yeah") while x talks on, and answers at 9-12 s over x's last second.
    # The exclusive turns give each overlap to one voice; the regions hear both.
    turns = [SpeakerTurn(0.0, 4.0, "x"), SpeakerTurn(4.0, 5.0, "y"), SpeakerTurn(5.0, 9.0, "x"),
             SpeakerTurn(9.0, 12.0, "y")]
    voices = [SpeakerTurn(0.0, 10.0, "x"), SpeakerTurn(4.0, 5.0, "y"), SpeakerTurn(9.0, 12.0, "y")]
    segs = [
        _segment([("so", 0.2, 0.5), ("we", 0.6, 3.8)]),
        _segment([("yeah", 4.1, 4.6)]),
        _segment([("then", 5.2, 5.6), ("more", 5.7, 8.8)]),
        _segment([("right", 9.3, 11.5)]),
    ]
    spans = [(s.speaker, round(s.start, 2), round(s.end, 2))
             for s in split_by_speaker(iter(segs), turns, SpeakerLabeler({}), voices=voices, overlap_s=2.0)]
    assert spans == [
        ("A", 0.0, 5.0),  # on beneath y's "yeah", up to x's own next turn (its words are the third segment's)
        ("B", 4.0, 5.0),
        ("A", 5.0, 10.0),  # never back over its own first segment; on beneath y's answer to where x stops
        ("B", 9.0, 12.0),
    ]
    # Without overlap_s (or regions) the segments stay exclusive, as before.
    exclusive = [(s.speaker, round(s.start, 2), round(s.end, 2))
                 for s in split_by_speaker(iter(segs), turns, SpeakerLabeler({}), voices=voices, overlap_s=0.0)]
    assert exclusive == [("A", 0.0, 4.0), ("B", 4.0, 5.0), ("A", 5.0, 9.0), ("B", 9.0, 12.0)]
    # At most overlap_s past the fitted edge: the first segment stops at 4.5 s and the third reaches back to it.
    bounded = [(s.speaker, round(s.start, 2), round(s.end, 2))
               for s in split_by_speaker(iter(segs), turns, SpeakerLabeler({}), voices=voices, overlap_s=0.5)]
    assert bounded == [("A", 0.0, 4.5), ("B", 4.0, 5.0), ("A", 4.5, 9.5), ("B", 9.0, 12.0)]


def test_speaker_runs_join_touching_turns_and_find_neighbours():
    runs = SpeakerRuns([SpeakerTurn(0.0, 1.0, "x"), SpeakerTurn(1.0, 2.0, "x"), SpeakerTurn(3.0, 4.0, "x"),
                        SpeakerTurn(1.5, 3.5, "y")])
    assert runs.around("x", 0.5) == (0.0, 2.0) and runs.around("x", 2.0) == (0.0, 2.0)
    assert runs.around("x", 2.5) is None and runs.around("z", 1.0) is None
    assert runs.last_end_by("x", 3.0) == 2.0 and runs.last_end_by("x", 1.9) is None
    assert runs.first_start_from("x", 2.1) == 3.0 and runs.first_start_from("y", 2.0) is None


def test_one_speaker_segment_keeps_its_text_and_tokens():
    seg = _segment([("good", 0.1, 0.4), ("morning", 0.5, 0.9)])
    (out,) = split_by_speaker(iter([seg]), [SpeakerTurn(0.0, 1.0, "x")], SpeakerLabeler({}))
    assert out.text == seg.text and out.tokens == seg.tokens and out.speaker == "A"


def test_closing_the_split_stream_closes_the_decoder():
    closed = []

    class Source:
        def __iter__(self):
            return self

        def __next__(self):
            return _segment([("a", 0.0, 0.5)])

        def close(self):
            closed.append(True)

    stream = split_by_speaker(Source(), [SpeakerTurn(0.0, 1.0, "x")], SpeakerLabeler({}))
    next(stream)
    stream.close()
    assert closed == [True]


def test_a_local_speaker_holding_two_voices_is_split():
    split_mixed_voices = pytest.importorskip("engines.diarization.pipeline").split_mixed_voices
    voice = np.zeros(100, dtype=int)  # which voice each frame is: 0 = X, 1 = Y
    voice[50:90] = 1

    def embed(mask):
        if mask.sum() < 3:
            return None
        return np.mean([_unit(0.0) if voice[i] == 0 else _unit(1.4) for i in np.flatnonzero(mask)], axis=0)

    chunk = np.zeros((100, 3), dtype=np.float32)
    chunk[0:40, 0] = chunk[50:75, 0] = chunk[80:82, 0] = 1  # X, Y, and a stretch of Y too short to embed
    chunk[10:30, 2] = 1
    out = split_mixed_voices(chunk, embed, min_run=10, threshold=0.4)
    assert out[0:40, 0].all() and not out[40:, 0].any()
    assert out[50:75, 1].all() and out[80:82, 1].all() and not out[:50, 1].any()
    assert (out[:, 2] == chunk[:, 2]).all()
    assert (out.sum(axis=1) == chunk.sum(axis=1)).all()  # no frame gained or lost a speaker

    # One voice throughout, or nowhere to put a second one: unchanged.
    voice[:] = 0
    assert (split_mixed_voices(chunk, embed, min_run=10, threshold=0.4) == chunk).all()
    voice[50:90] = 1
    full = chunk.copy()
    full[90:95, 1] = 1
    assert (split_mixed_voices(full, embed, min_run=10, threshold=0.4) == full).all()
