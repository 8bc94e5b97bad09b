"""Unit: the coverage guarantee's pure parts (engines/coverage.py): uncovered speech, the
hallucination guard, and the merge of re-decoded stretches into the segment stream."""

from __future__ import annotations

import pytest

from engines.coverage import ensure_coverage, is_hallucination, is_loop, merge, subtract, uncovered_speech
from engines.types import CoverageStats, Segment, Word


def seg(start, end, text, seek=0, id=0, words=()):
    return Segment(id=id, seek=seek, start=start, end=end, text=text, tokens=[], temperature=0.0,
                   avg_logprob=-0.2, compression_ratio=1.2, no_speech_prob=0.01, words=list(words))


def test_subtract_and_merge():
    assert subtract([(0, 10)], [(2, 3), (5, 7)]) == [(0, 2), (3, 5), (7, 10)]
    assert subtract([(0, 10)], [(0, 10)]) == []
    assert subtract([(0, 4), (6, 9)], [(3, 7)]) == [(0, 3), (7, 9)]
    assert subtract([(0, 4)], []) == [(0, 4)]
    assert merge([(5, 6), (0, 1), (1.2, 2)], 0.5) == [(0, 2), (5, 6)]


def test_uncovered_speech_keeps_only_stretches_over_a_second():
    speech = [(0.0, 12.0), (15.0, 15.6), (20.0, 29.5)]
    covered = [(0.2, 11.4), (20.0, 24.0)]
    # 0-0.2 and 11.4-12 are loose segment edges; 15-15.6 is short; 24-29.5 was dropped.
    assert uncovered_speech(speech, covered) == [(24.0, 29.5)]
    # Two runs 0.3 s apart are one stretch, long enough together.
    assert uncovered_speech([(30.0, 30.6), (30.9, 31.5)], []) == [(30.0, 31.5)]
    assert uncovered_speech([(30.0, 30.6), (32.0, 32.6)], []) == []


@pytest.mark.parametrize("text", [
    "", "  ", " Thank you.", "Thanks for watching!", " you", "Subtitles by the Amara.org community",
    " I'm sorry. I'm sorry. I'm sorry.", " the the the the the the the the", " Bye. Bye.",
    " Please subscribe to my channel.",
])
def test_guard_drops_silence_phrases_and_repetitions(text):
    assert is_hallucination(text)


@pytest.mark.parametrize("text", [
    " I could do so much for all at home, how I should enjoy that.",
    " Thank you for the report, we will read it tonight.",
    " Go forward ten meters.",
])
def test_guard_keeps_speech(text):
    assert not is_hallucination(text)


def test_guard_drops_text_its_neighbours_already_hold():
    assert is_hallucination(" liked best of all.", before=" the thing I liked best of all.")
    assert is_hallucination(" Hold on,", after=" Hold on, hold fast.")
    assert not is_hallucination(" hold fast", before=" Hold on,")
    # Seen on the corpus: the prompt made a 1.4 s re-decode say the whole previous segment again.
    assert is_hallucination(" Testar 2, 2, 3, 4, 5, 6, 7, 8.", before=" Testar 1, 2, 3, 4, 5, 6, 7, 8.")
    assert not is_hallucination(" Montreal for Steleiner. Word, another word. Here's some more word, word.",
                                before=" But Montreal for Steleiner.")


def test_ensure_coverage_fills_the_gaps_in_order():
    decoded = [seg(0.0, 8.0, " First part.", seek=0), seg(8.0, 14.0, " Second part.", seek=0),
               seg(31.0, 38.0, " After the gap.", seek=3000)]
    speech = {  # what the VAD hears in each gap it is asked about
        (14.0, 31.0): [(20.0, 27.5)],
        (38.0, 45.0): [(39.0, 44.8)],
    }
    calls = []

    def find_speech(a, b):
        return speech.get((a, b), [])

    def redecode(a, b, prompt):
        calls.append((a, b, prompt))
        if a < 30:
            return [seg(a + 0.1, a + 4.0, " Lost words one,", words=[Word("Lost", a + 0.1, a + 0.5, 0.9)]),
                    seg(a + 4.0, b + 3.0, " lost words two.")]  # runs past its gap: clamped
        return [seg(a, b, " Thank you.")]  # the tail is a silence phrase: dropped

    stats = CoverageStats()
    out = list(ensure_coverage(iter(decoded), duration=45.0, find_speech=find_speech, redecode=redecode,
                               stats=stats, prompt="Glossary."))
    assert [s.text for s in out] == [" First part.", " Second part.", " Lost words one,", " lost words two.",
                                     " After the gap."]
    assert [s.id for s in out] == list(range(5))
    starts = [s.start for s in out]
    assert starts == sorted(starts)
    seeks = [s.seek for s in out]
    assert seeks == sorted(seeks)
    assert all(s.end <= 31.0 for s in out[2:4])  # clamped into the gap
    assert out[2].words[0].start == pytest.approx(19.9)
    # Clipped to the speech (with a little padding), after the text so far.
    assert calls[0] == (pytest.approx(19.8), pytest.approx(27.7), "Glossary. First part. Second part.")
    assert calls[1][0] == pytest.approx(38.8)
    assert stats.redecoded == 1 and stats.redecoded_seconds == pytest.approx(7.5) and stats.dropped == 1
    assert stats.scanned_seconds == pytest.approx(17.0 + 7.0)


def test_ensure_coverage_with_nothing_decoded_and_nothing_missing():
    stats = CoverageStats()
    out = list(ensure_coverage(iter([]), duration=10.0, find_speech=lambda a, b: [(1.0, 9.0)],
                               redecode=lambda a, b, p: [seg(a, b, " All of it.")], stats=stats))
    assert [s.text for s in out] == [" All of it."] and stats.redecoded == 1
    asked = []
    covered = [seg(0.0, 5.0, " One."), seg(5.3, 10.0, " Two.")]  # gaps under a second are not even scanned
    out = list(ensure_coverage(iter(covered), duration=10.2, find_speech=lambda a, b: asked.append((a, b)) or [],
                               redecode=lambda a, b, p: [], stats=CoverageStats()))
    assert [s.text for s in out] == [" One.", " Two."] and asked == []


def test_ensure_coverage_closes_the_decoder():
    closed = []

    def gen():
        try:
            yield seg(0.0, 1.0, " One.")
            yield seg(1.0, 2.0, " Two.")
        finally:
            closed.append(True)

    out = ensure_coverage(gen(), duration=2.0, find_speech=lambda a, b: [], redecode=lambda a, b, p: [],
                          stats=CoverageStats())
    next(out)
    out.close()
    assert closed == [True]


@pytest.mark.parametrize("text", ["I'm sorry, I'm sorry, I'm sorry, I'm", "I'm sorry, I'm sorry, I'm sorry, I",
                                  "new, new, new, new",
                                  "Wh-wh-wh-wh-wh-wh-wh-wh-", "la la la la la la la la"])
def test_a_phrase_looping_to_the_end_is_a_decoder_loop(text):
    assert is_loop(text)


@pytest.mark.parametrize("text", ["No, no, no.", "Uh, uh,", "I am, I am", "Word, another word, word, word, word.",
                                  "Montreal Forced Aligner.", "", "so so so sorry"])
def test_short_repeats_and_sentences_are_speech(text):
    assert not is_loop(text)
