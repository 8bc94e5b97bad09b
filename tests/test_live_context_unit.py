"""engines/live_context.py: when the previous turn goes before a live turn's final decode, and what is kept."""

import numpy as np

from engines.live_context import GAP_S, TurnContext, after_context, in_context, previous_turn
from engines.local_agreement import Word
from engines.types import SAMPLE_RATE


def seconds(s: float, value: float = 0.1) -> np.ndarray:
    return np.full(int(s * SAMPLE_RATE), value, dtype=np.float32)


def test_a_finished_turn_gives_context_only_with_text_and_within_the_length():
    assert previous_turn(seconds(2), "Ten of clubs.", 10).text == "Ten of clubs."
    assert previous_turn(seconds(2), "  Ten  of\nclubs. ", 10).text == "Ten of clubs."
    assert previous_turn(seconds(2), "", 10) is None  # nothing to force
    assert previous_turn(seconds(12), "a long turn", 10) is None  # its text cannot be cut to 10 s of audio
    assert previous_turn(None, "text", 10) is None
    assert previous_turn(seconds(2), "text", 0) is None  # 0 = off


def test_the_turn_follows_the_context_audio_and_the_prefix_starts_with_its_text():
    context = TurnContext(seconds(2, 0.5), "Ten of clubs.")
    turn = seconds(3, 0.25)
    audio, prefix, used = in_context(context, turn, "Seven")
    assert used and prefix == "Ten of clubs. Seven"
    gap = int(GAP_S * SAMPLE_RATE)
    assert audio.size == context.samples.size + gap + turn.size
    assert np.all(audio[: context.samples.size] == 0.5) and np.all(audio[-turn.size:] == 0.25)
    assert not np.any(audio[context.samples.size: context.samples.size + gap])
    assert in_context(context, turn, None)[1] == "Ten of clubs."


def test_no_context_when_it_would_not_fit_one_window():
    context = TurnContext(seconds(8), "earlier")
    turn = seconds(22)
    audio, prefix, used = in_context(context, turn, "sent")
    assert not used and audio is turn and prefix == "sent"
    assert in_context(None, turn, None) == (turn, None, False)


def test_the_words_after_the_context_are_the_turns():
    context = TurnContext(seconds(1), "Ten of clubs.")
    words = [Word(w) for w in "Ten of clubs. Seven of hearts.".split()]
    assert [w.text for w in after_context(context, words)] == ["Seven", "of", "hearts."]
    assert after_context(context, [Word(w) for w in "Ten of clubs.".split()]) == []
    assert after_context(context, [Word(w) for w in "Ten of clothes. Seven".split()]) is None  # not its start
    assert after_context(context, []) is None
