"""The local-agreement policy of whisper_streaming (LocalAgreement-2), on words.

A growing turn is decoded again and again; a word is *committed* (sent to the client, never taken
back) once two consecutive decodes agree on it and on every word before it. What the last decode
adds beyond the committed words is sent when the turn ends. Pure: no model, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engines.types import TokenLogprob, Transcript


@dataclass(frozen=True)
class Word:
    """One whitespace-delimited word of a hypothesis, with the log probabilities of its tokens."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


def join(words: list[Word]) -> str:
    return " ".join(w.text for w in words)


def words_of(transcript: Transcript) -> list[Word]:
    """The transcript's words; each carries its tokens' logprobs when the decode recorded them.

    Whisper's byte-level tokens of a segment concatenate to the segment's text, and a token that
    starts with a space starts a word. If the tokens do not spell the text (no logprobs asked for,
    or an alignment that failed), the words are the text split on whitespace, without logprobs.
    """
    words: list[Word] = []
    for segment in transcript.segments:
        tokens = segment.logprobs
        spelled = b"".join(bytes(t.bytes) for t in tokens).decode("utf-8", "replace")
        if not tokens or spelled.split() != segment.text.split():
            words.extend(Word(w) for w in segment.text.split())
            continue
        groups: list[list[TokenLogprob]] = []
        for token in tokens:
            starts_word = not groups or bytes(token.bytes[:1]).isspace()
            if starts_word and groups and not b"".join(bytes(t.bytes) for t in groups[-1]).strip():
                starts_word = False  # a lone space token joins the word it precedes
            if starts_word:
                groups.append([token])
            else:
                groups[-1].append(token)
        for group in groups:
            text = b"".join(bytes(t.bytes) for t in group).decode("utf-8", "replace").strip()
            if not text:
                continue
            # A word the tokens split on inner whitespace ("a\nb") becomes several words, logprobs on the first.
            parts = text.split()
            words.append(Word(parts[0], tuple(group)))
            words.extend(Word(p) for p in parts[1:])
    return words


def common_prefix(a: list[Word], b: list[Word]) -> int:
    """How many leading words `a` and `b` share (exact text)."""
    n = 0
    for x, y in zip(a, b):
        if x.text != y.text:
            break
        n += 1
    return n


@dataclass
class LocalAgreement:
    """Committed words of one turn, grown from consecutive hypotheses of the whole turn so far."""

    committed: list[Word] = field(default_factory=list)
    hold: int = 0  # agreed words at the end of the agreement held back until a later decode agrees past them
    _previous: list[Word] | None = None

    def update(self, hypothesis: list[Word]) -> list[Word]:
        """Take the latest decode of the turn; return the words newly committed (maybe none)."""
        previous, self._previous = self._previous, hypothesis
        if previous is None:
            return []
        agreed = common_prefix(previous, hypothesis) - self.hold
        done = len(self.committed)
        if agreed <= done or common_prefix(self.committed, hypothesis) < done:
            return []
        new = hypothesis[done:agreed]
        self.committed.extend(new)
        return new

    def finish(self, final: list[Word]) -> list[Word]:
        """The words of the final decode that follow the committed ones; the turn's text is then
        `join(committed + returned)`.

        The final decode normally repeats the committed words first (they are its forced prefix).
        When it does not, the rest is taken after the place where the last two committed words
        appear in it nearest to where they should be, or, if nowhere, after as many words as were
        committed.
        """
        done = len(self.committed)
        if common_prefix(self.committed, final) == done:
            rest = final[done:]
        else:
            rest = final[_resume_at(self.committed, final):]
        self.committed.extend(rest)
        return rest


def _resume_at(committed: list[Word], final: list[Word]) -> int:
    """Where the final decode goes on after the committed words: just after the occurrence of their
    last two words nearest to where they should end; without one, after as many words as were committed."""
    done = len(committed)
    if not done:
        return 0
    key = [w.text for w in committed[-2:]]
    texts = [w.text for w in final]
    ends = [i + len(key) for i in range(len(texts) - len(key) + 1) if texts[i : i + len(key)] == key]
    if ends:
        return min(ends, key=lambda end: abs(end - done))
    return min(done, len(final))
