"""Speaker labels: known-speaker matching and the A, B, ... naming of the rest.

Pure numpy/scipy, so it is unit-tested without torch.
"""

from __future__ import annotations

import bisect
import itertools
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class SpeakerTurn:
    start: float
    end: float
    speaker: str


def normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def match_known_speakers(
    centroids: dict[str, np.ndarray],
    references: dict[str, np.ndarray],
    threshold: float,
    same_voice: float | None = None,
    floor: float | None = None,
) -> dict[str, str]:
    """Map cluster labels to known names.

    `references[name]` is one or more embeddings of that person's enrolment clips
    (averaged after normalising). Each cluster takes the name of the reference it
    resembles most, when their cosine similarity reaches `threshold`: two names never
    share a cluster, and a voice that resembles no reference keeps no name. A name may
    go to several clusters, so a voice the clustering split in two keeps its name on
    both; with `same_voice`, a cluster other than the name's best one takes it only if
    its centroid is that close (cosine) to the best one's, i.e. it is the same voice.

    With `floor`, names that no cluster reached at `threshold` are then paired one to one
    with the clusters still unnamed (the pairing with the highest total similarity), and
    a pair whose similarity reaches `floor` keeps the name. A clean enrolment clip and a
    voice recorded in a reverberant, noisy room can score well under `threshold` while the
    voice is still that name's best match among the speakers of the recording.
    """
    if not centroids or not references:
        return {}
    labels = list(centroids)
    names = list(references)
    c = normalize(np.stack([centroids[label] for label in labels]))
    r = normalize(np.stack([normalize(references[name]).mean(axis=0) for name in names]))
    similarity = c @ r.T
    best_cluster = np.argmax(similarity, axis=0)  # per name
    known = {}
    for i, label in enumerate(labels):
        j = int(np.argmax(similarity[i]))
        if similarity[i, j] < threshold:
            continue
        b = best_cluster[j]
        if same_voice is not None and i != b and float(c[i] @ c[b]) < same_voice:
            continue
        known[label] = names[j]
    if floor is not None:
        known.update(_pair_the_rest(labels, names, c, r, known, floor))
    return known


def usable_centroids(centroids: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """The labels whose centroid is finite, and those centroids normalised (one row per label)."""
    labels = [label for label in centroids if np.all(np.isfinite(centroids[label]))]
    return labels, normalize(np.stack([centroids[label] for label in labels])) if labels else np.zeros((0, 0))


def reassign_turns(
    turns: list[SpeakerTurn],
    vectors: list[np.ndarray | None],
    centroids: dict[str, np.ndarray],
    margin: float = 0.0,
) -> list[SpeakerTurn]:
    """Move each turn to the cluster whose centroid its own embedding is closest to, by more than `margin`.

    The clusters are formed from embeddings of 10 s windows, where one local speaker may carry
    two voices; the exclusive turns cut from them then inherit a window's label. The turn's own
    embedding (`vectors[i]`, None to leave the turn as it is) is the better witness
    (docs/diarization-evaluation.md, round 4).
    """
    labels, c = usable_centroids(centroids)
    if len(labels) < 2:
        return list(turns)
    out = []
    for turn, vector in zip(turns, vectors):
        if vector is not None and turn.speaker in labels:
            similarity = c @ normalize(vector)[0]
            best = int(np.argmax(similarity))
            if similarity[best] - similarity[labels.index(turn.speaker)] > margin:
                turn = SpeakerTurn(turn.start, turn.end, labels[best])
        out.append(turn)
    return out


def split_turns(
    turns: list[SpeakerTurn],
    windows: list[list[tuple[float, np.ndarray]]],
    centroids: dict[str, np.ndarray],
    window_s: float,
    hop_s: float,
    margin: float = 0.0,
) -> list[SpeakerTurn]:
    """Cut each turn where its own windows sound like another cluster, and give those stretches to it.

    `windows[i]` holds (start, embedding) of windows `window_s` long every `hop_s` inside turn i. A window
    whose embedding is closer to another cluster's centroid (by more than `margin`) than to the turn's own
    claims the `hop_s` around its centre, or the turn's edge for the first and last window; runs of windows
    that claim the same cluster form one stretch. A turn that missed a change of speaker (a short reply inside
    it, or two voices one after the other) is so cut at the change (docs/diarization-evaluation.md, round 5).
    """
    labels, c = usable_centroids(centroids)
    if len(labels) < 2:
        return list(turns)
    out: list[SpeakerTurn] = []
    for turn, spans in zip(turns, windows):
        if not spans or turn.speaker not in labels:
            out.append(turn)
            continue
        own = labels.index(turn.speaker)
        similarity = normalize(np.stack([v for _, v in spans])) @ c.T
        best = np.argmax(similarity, axis=1)
        claims = [labels[b] if b != own and s[b] - s[own] > margin else turn.speaker for b, s in zip(best, similarity)]
        cursor = turn.start
        for claim, run in itertools.groupby(range(len(claims)), key=claims.__getitem__):
            if claim == turn.speaker:
                continue
            run = list(run)
            i, j = run[0], run[-1]
            start = turn.start if i == 0 else max(turn.start, spans[i][0] + (window_s - hop_s) / 2)
            end = turn.end if j == len(claims) - 1 else min(turn.end, spans[j][0] + (window_s + hop_s) / 2)
            if start > cursor:
                out.append(SpeakerTurn(cursor, round(start, 3), turn.speaker))
            out.append(SpeakerTurn(round(max(start, cursor), 3), round(end, 3), claim))
            cursor = round(end, 3)
        if cursor < turn.end:
            out.append(SpeakerTurn(cursor, turn.end, turn.speaker))
    return out


def runs(active: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each stretch of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], active.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def overlapped_regions(turns: list[SpeakerTurn], before: list[SpeakerTurn], regions: list[SpeakerTurn],
                       frame_s: float = 0.01) -> list[SpeakerTurn]:
    """Who spoke when, overlap included, from the final exclusive `turns`: each turn as it is, and where `regions`
    (the reconstruction's overlap-aware diarization) hear two or more voices at once, the other voices heard there.

    `before` are the exclusive turns as the reconstruction cut them, before the turn steps relabelled stretches of
    them. Where a step gave a stretch to a voice the regions heard there too, it only chose which voice comes first
    and every other voice heard stays; where it gave it to a voice the regions did not hear, the voice it took the
    stretch from is the one it corrected, and that one is not added back. Time only `regions` cover keeps their
    labels. Without this the overlap-aware view missed every correction of the turn steps
    (docs/diarization-evaluation.md, round 7). On a `frame_s` grid, for speed on long audio.
    """
    if not regions:
        return list(turns)
    end = max(t.end for t in itertools.chain(turns, before, regions))
    frames = int(np.ceil(end / frame_s)) + 1
    labels = sorted({t.speaker for t in itertools.chain(turns, regions)})
    index = {label: i for i, label in enumerate(labels)}

    def spans(items: list[SpeakerTurn]) -> Iterator[tuple[int, int, SpeakerTurn]]:
        for t in items:
            yield int(round(t.start / frame_s)), int(round(t.end / frame_s)), t

    heard = np.zeros((len(labels), frames), dtype=bool)
    for a, b, t in spans(regions):
        heard[index[t.speaker], a:b] = True
    final = np.full(frames, -1, dtype=np.int32)
    for a, b, t in spans(turns):
        final[a:b] = index[t.speaker]
    first = np.full(frames, -1, dtype=np.int32)
    for a, b, t in spans(before):
        first[a:b] = index.get(t.speaker, -1)
    overlapped = heard.sum(axis=0) >= 2
    confirmed = np.take_along_axis(heard, np.maximum(final, 0)[None], axis=0)[0] & (final >= 0)
    out: list[SpeakerTurn] = []
    for i, label in enumerate(labels):
        active = (final == i) | (heard[i] & (final < 0))
        active |= heard[i] & overlapped & (confirmed | (first != i))
        out.extend(SpeakerTurn(round(a * frame_s, 3), round(b * frame_s, 3), label) for a, b in runs(active))
    return sorted(out, key=lambda t: (t.start, t.speaker))


def name_speakers(
    turns: list[SpeakerTurn],
    centroids: dict[str, np.ndarray],
    references: dict[str, np.ndarray],
    embed_turn: Callable[[SpeakerTurn], np.ndarray | None],
    threshold: float,
    floor: float | None = None,
    turn_min_s: float = 0.0,
    turn_margin: float = 0.0,
) -> tuple[list[SpeakerTurn], dict[str, str]]:
    """Known names for a diarization: clusters matched to references, then (with `turn_min_s` > 0) each
    named cluster's turns of at least that length checked on their own (`name_turns`).

    Returns the turns (some relabelled) and the internal label -> name map to label them with.
    """
    known = match_known_speakers(centroids, references, threshold, floor=floor)
    if not turn_min_s or not known or len(references) < 2:
        return turns, known
    vectors = {}
    for i, turn in enumerate(turns):
        if turn.speaker in known and turn.end - turn.start >= turn_min_s:
            vector = embed_turn(turn)
            if vector is not None:
                vectors[i] = vector
    return name_turns(turns, vectors, known, references, turn_margin)


def name_turns(
    turns: list[SpeakerTurn],
    vectors: dict[int, np.ndarray],
    known: dict[str, str],
    references: dict[str, np.ndarray],
    margin: float = 0.0,
) -> tuple[list[SpeakerTurn], dict[str, str]]:
    """Give a named cluster's turn the name its own voice is closest to, when that is another known speaker.

    `vectors[i]` is an embedding of `turns[i]` alone (turns without one keep their cluster's name).
    A cluster that holds two enrolled voices names all of its turns after one of them; the turn's
    own embedding tells them apart far more often than not (docs/diarization-evaluation.md, round 4).
    A turn whose closest reference beats its cluster's name by more than `margin` moves to a cluster
    that already carries that name, or to a new internal label `known:<name>` when none does.
    Unnamed clusters are left alone: their turns are voices no reference matched.
    """
    if not vectors:
        return turns, known
    names = list(references)
    r = normalize(np.stack([normalize(references[name]).mean(axis=0) for name in names]))
    label_of = {}
    for label, name in known.items():
        label_of.setdefault(name, label)
    known = dict(known)
    out = list(turns)
    for i, vector in vectors.items():
        turn = turns[i]
        name = known.get(turn.speaker)
        if name is None:
            continue
        similarity = normalize(vector)[0] @ r.T
        best = int(np.argmax(similarity))
        if names[best] == name or similarity[best] - similarity[names.index(name)] <= margin:
            continue
        target = label_of.get(names[best])
        if target is None:
            target = label_of[names[best]] = f"known:{names[best]}"
            known[target] = names[best]
        out[i] = SpeakerTurn(turn.start, turn.end, target)
    return out, known


def _pair_the_rest(labels: list[str], names: list[str], c: np.ndarray, r: np.ndarray,
                   known: dict[str, str], floor: float) -> dict[str, str]:
    """One-to-one pairing of unnamed clusters with unplaced names (normalised rows c, r)."""
    free = [i for i, label in enumerate(labels) if label not in known]
    placed = set(known.values())
    left = [j for j, name in enumerate(names) if name not in placed]
    if not free or not left:
        return {}
    similarity = c[free] @ r[left].T
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    return {labels[free[i]]: names[left[j]] for i, j in zip(rows, cols) if similarity[i, j] >= floor}


def _letters(n: int) -> str:
    letters = ""
    n += 1
    while n:
        n, rem = divmod(n - 1, 26)
        letters = string.ascii_uppercase[rem] + letters
    return letters


class SpeakerLabeler:
    """Internal cluster label -> public label, given as speakers first appear in the output.

    A cluster matched to a known speaker gets that name; the others get A, B, ... in
    order of first appearance, skipping letters that are also known names.
    """

    def __init__(self, known: dict[str, str]):
        self.known = dict(known)
        self._assigned: dict[str, str] = {}
        self._next = 0

    def label(self, internal: str) -> str:
        if internal in self.known:
            return self.known[internal]
        if internal not in self._assigned:
            taken = set(self.known.values())
            while (candidate := _letters(self._next)) in taken:
                self._next += 1
            self._assigned[internal] = candidate
            self._next += 1
        return self._assigned[internal]


class SpeakerTimeline:
    """Exclusive speaker turns (at most one speaker at a time), looked up by bisection.

    A two-hour recording has thousands of turns and tens of thousands of words; a scan of
    every turn per word would cost minutes, a bisection costs microseconds.
    """

    def __init__(self, turns: list[SpeakerTurn]):
        self.turns = sorted(turns, key=lambda t: (t.start, t.end))
        self._ends = [t.end for t in self.turns]  # sorted too: the turns do not overlap

    def overlapping(self, start: float, end: float) -> Iterator[SpeakerTurn]:
        """The turns that overlap [start, end], in time order."""
        i = bisect.bisect_right(self._ends, start)  # the first turn that ends after `start`
        while i < len(self.turns) and self.turns[i].start < end:
            yield self.turns[i]
            i += 1

    def span_of(self, speaker: str, start: float, end: float) -> tuple[float, float] | None:
        """From the first to the last of `speaker`'s turns that overlap [start, end]; None if none does."""
        mine = [t for t in self.overlapping(start, end) if t.speaker == speaker]
        return (mine[0].start, mine[-1].end) if mine else None

    def speaker_at(self, start: float, end: float) -> str | None:
        """The speaker who talks most over [start, end]; if nobody does, the nearest turn's speaker."""
        if not self.turns:
            return None
        best, best_overlap = None, 0.0
        for turn in self.overlapping(start, end):
            overlap = min(end, turn.end) - max(start, turn.start)
            if overlap > best_overlap:
                best, best_overlap = turn.speaker, overlap
        if best is not None:
            return best
        middle = (start + end) / 2
        k = bisect.bisect_left(self._ends, middle)
        neighbours = self.turns[max(k - 1, 0) : k + 1]
        nearest = min(neighbours, key=lambda t: 0.0 if t.start <= middle <= t.end else min(abs(t.start - middle), abs(t.end - middle)))
        return nearest.speaker


class SpeakerRuns:
    """Each speaker's stretches of voice (touching turns joined), looked up by bisection."""

    def __init__(self, turns: list[SpeakerTurn]):
        joined: dict[str, list[list[float]]] = {}
        for t in sorted(turns, key=lambda t: (t.start, t.end)):
            mine = joined.setdefault(t.speaker, [])
            if mine and t.start <= mine[-1][1]:
                mine[-1][1] = max(mine[-1][1], t.end)
            else:
                mine.append([t.start, t.end])
        self._starts = {k: [r[0] for r in v] for k, v in joined.items()}
        self._ends = {k: [r[1] for r in v] for k, v in joined.items()}

    def around(self, speaker: str, t: float) -> tuple[float, float] | None:
        """The stretch of `speaker` that holds time `t` (edges included), or None."""
        starts, ends = self._starts.get(speaker, []), self._ends.get(speaker, [])
        i = bisect.bisect_left(ends, t)
        return (starts[i], ends[i]) if i < len(starts) and starts[i] <= t else None

    def last_end_by(self, speaker: str, t: float) -> float | None:
        """The end of `speaker`'s last stretch that is over by time `t`, or None."""
        i = bisect.bisect_right(self._ends.get(speaker, []), t)
        return self._ends[speaker][i - 1] if i else None

    def first_start_from(self, speaker: str, t: float) -> float | None:
        """The start of `speaker`'s first stretch that begins at or after time `t`, or None."""
        starts = self._starts.get(speaker, [])
        i = bisect.bisect_left(starts, t)
        return starts[i] if i < len(starts) else None


def speaker_at(turns: list[SpeakerTurn], start: float, end: float) -> str | None:
    """`SpeakerTimeline(turns).speaker_at(start, end)`, for a single lookup."""
    return SpeakerTimeline(turns).speaker_at(start, end)
