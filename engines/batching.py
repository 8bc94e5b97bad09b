"""Batching across requests: one CTranslate2 call decodes the windows of every request that is waiting.

`CrossRequestBatcher` stands in for the `ctranslate2.models.Whisper` inside faster-whisper's
`WhisperModel`. Each request still runs faster-whisper's own sequential loop in its own thread
(window after window, each conditioned on the text before it, with the temperature fallback,
word timestamps and everything else unchanged); only the model calls it makes (`encode`,
`generate`, `align`, `detect_language`) are queued here. A dispatcher thread takes the oldest
waiting call together with every other waiting call it can be merged with, runs them as one
batched call and hands each request its share of the results. Nothing waits on purpose: calls
pile up while the previous batch runs, so a lone request is decoded exactly as faster-whisper
alone would decode it, with all the cores, and under load the batches fill by themselves. A call
joins a batch only with calls of the same kind and options (a request retrying at temperature 0.4
never shares a call with one at 0.0), and requests are served oldest call first, so one long
upload interleaves window by window with short ones instead of starving them.

CTranslate2 requires the <|startoftranscript|> token at the same position in every prompt of a
batch (and the same number of task tokens after it). Prompts that carry previous text are therefore
merged with the previous text of each cut to the shortest one among them (the most recent tokens
are kept; Whisper is trained on contexts of any length, and faster-whisper already cuts it to 223
tokens); prompts without previous text batch among themselves. `scripts/bench` measures the effect
on WER (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import ctranslate2
import numpy as np

log = logging.getLogger("oyez.batching")

# How long a merged call may wait for requests that are between two calls: a few milliseconds, against
# calls of 50 ms (GPU) to seconds (CPU). Only with merging on, and only while such requests exist.
MERGE_WAIT_S = 0.005


@dataclass
class _Call:
    """One model call of one request, waiting to be run (alone or merged into a batch)."""

    kind: str  # "encode", "generate", "align", "detect_language"
    key: tuple  # calls with equal kind and key can share one CTranslate2 call
    inputs: Any  # features or encoder output, batch first: a numpy array to merge, or as given when merging is off
    items: list  # per batch row: the prompt (generate), text tokens (align)
    extra: list = field(default_factory=list)  # per row: num_frames (align)
    options: dict = field(default_factory=dict)  # keyword arguments of the model call
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None

    @property
    def rows(self) -> int:
        return int(self.inputs.shape[0]) if self.inputs.shape else 1


class BatchStats:
    """What the server exports (/metrics): CTranslate2 calls by kind and lane, the rows they carried,
    and how many request calls shared a CTranslate2 call with another."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, str], int] = {}  # (kind, lane) -> CTranslate2 calls
        self.rows: dict[str, int] = {}
        self.merged: dict[str, int] = {}

    def add(self, kind: str, lane: str, calls: int, rows: int) -> None:
        self.calls[kind, lane] = self.calls.get((kind, lane), 0) + 1
        self.rows[kind] = self.rows.get(kind, 0) + rows
        if calls > 1:
            self.merged[kind] = self.merged.get(kind, 0) + calls


@dataclass
class Lane:
    """A CTranslate2 model the dispatcher can send calls to.

    `cost`: the cores one call keeps busy (its intra-op threads); `slots`: calls it runs at once (its
    replicas); `solo`: used only while a single request is decoding and nothing else waits.
    """

    model: Any
    name: str = "replicas"
    cost: int = 1
    slots: int = 1
    solo: bool = False
    busy: int = 0


class CrossRequestBatcher:
    """A drop-in for `ctranslate2.models.Whisper` that schedules every request's model calls.

    Calls run on `lanes` within a budget of `cores`, so the CPU is never oversubscribed: on CPU a
    lone request gets a replica that uses every core (the `solo` lane) and concurrent requests get
    one-thread replicas each, because on 2 cores two one-thread calls side by side decode about a
    third more per second than one two-thread call (docs/benchmarks.md). Merging (`max_batch` > 1)
    puts compatible waiting calls into one batched call, which pays on a GPU; a single call larger
    than `max_batch` still runs, alone. Attribute reads (is_multilingual, device) go to the last lane's model.
    """

    def __init__(self, lanes: list[Lane], *, sot: int, max_batch: int = 1, cores: int | None = None):
        self.lanes = lanes
        self._model = lanes[-1].model
        self._sot = sot
        self.max_batch = max(1, max_batch)
        self.cores = cores or max(lane.cost * lane.slots for lane in lanes)
        self.stats = BatchStats()
        self.active = 0  # requests decoding now (FasterWhisperEngine counts them)
        self._used = 0  # cores taken by running calls
        self._running = 0  # request calls in those
        self._pending: list[_Call] = []
        self._cond = threading.Condition()
        self._closed = False
        workers = sum(lane.slots for lane in lanes if not lane.solo) or 1
        self._threads = [
            threading.Thread(target=self._dispatch, name=f"oyez-batcher-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def __getattr__(self, name: str) -> Any:  # is_multilingual, device, n_mels, ...: the model's own
        return getattr(self._model, name)

    def snapshot(self) -> BatchStats:
        """A copy of the counters, safe to read while calls keep running."""
        copy = BatchStats()
        with self._cond:
            copy.calls, copy.rows, copy.merged = dict(self.stats.calls), dict(self.stats.rows), dict(self.stats.merged)
        return copy

    def enter(self) -> None:
        with self._cond:
            self.active += 1

    def leave(self) -> None:
        with self._cond:
            self.active -= 1
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the dispatchers once the calls already queued have run."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=30)

    # The model's interface, as faster-whisper calls it.

    def encode(self, features, to_cpu: bool = False):
        # Only encodings of equal length merge (engines/whisper_model.py trims the padding of short windows).
        key = (int(features.shape[-1]),)
        return self._run(_Call("encode", key, self._inputs(features), [], options={"to_cpu": to_cpu}))

    def detect_language(self, features):
        return self._run(_Call("detect_language", (), self._inputs(features), []))

    def generate(self, features, prompts, **options):
        inputs = self._inputs(features)
        sot = [list(p).index(self._sot) if self._sot in p else 0 for p in prompts]
        task = {len(p) - i for p, i in zip(prompts, sot)}
        has_context = {i > 0 for i in sot}
        if len(task) == 1 and len(has_context) == 1:
            key = (task.pop(), has_context.pop(), _freeze(options))
        else:  # rows CTranslate2 would not batch together anyway: the call runs as it is, alone
            key = (object(),)
        return self._run(_Call("generate", key, inputs, [list(p) for p in prompts], options=options))

    def align(self, features, start_sequence, text_tokens, num_frames, median_filter_width: int = 7):
        inputs = self._inputs(features)
        frames = list(num_frames) if isinstance(num_frames, (list, tuple)) else [int(num_frames)] * len(text_tokens)
        key = (tuple(start_sequence), int(median_filter_width))
        return self._run(_Call("align", key, inputs, [list(t) for t in text_tokens], frames))

    def _inputs(self, features):
        """What a call carries: a numpy array (batch first) when it may be merged, else the features as given
        (on a GPU the encoder output then stays on the device)."""
        return _array(features) if self.max_batch > 1 else features

    # Dispatch.

    def _run(self, call: _Call):
        with self._cond:
            if self._closed:
                raise RuntimeError("the model was unloaded")
            self._pending.append(call)
            self._cond.notify_all()
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result

    def _lane(self) -> Lane | None:
        """Where the oldest waiting call can run now, or None while the cores are taken."""
        alone = self._used == 0 and self.active <= 1 and len(self._pending) == 1
        for lane in self.lanes:
            if lane.solo and not alone:
                continue
            if lane.busy < lane.slots and self._used + lane.cost <= self.cores:
                return lane
        return None

    def _take(self) -> tuple[list[_Call], Lane] | None:
        """The oldest waiting call and every waiting call that can join it (up to `max_batch` rows), and its lane.

        With merging on, it waits up to MERGE_WAIT_S for requests that are decoding but have no call
        waiting or running (they are between two calls), so requests in step do share calls.
        """
        with self._cond:
            deadline = None
            while True:
                if not self._pending or (lane := self._lane()) is None:
                    if self._closed and not self._pending:
                        return None
                    self._cond.wait()
                    continue
                between = self.active - len(self._pending) - self._running  # requests about to call
                if self.max_batch > 1 and between > 0 and len(self._pending) < self.max_batch:
                    deadline = deadline or time.monotonic() + MERGE_WAIT_S
                    if (left := deadline - time.monotonic()) > 0:
                        self._cond.wait(left)
                        continue
                break
            first = self._pending[0]
            batch, rows, rest = [], 0, []
            for call in self._pending:
                if call.kind == first.kind and call.key == first.key and (not batch or rows + call.rows <= self.max_batch):
                    batch.append(call)
                    rows += call.rows
                else:
                    rest.append(call)
            self._pending = rest
            lane.busy += 1
            self._used += lane.cost
            self._running += len(batch)
            return batch, lane

    def _dispatch(self) -> None:
        while (taken := self._take()) is not None:
            batch, lane = taken
            try:
                results = _RUNNERS[batch[0].kind](self, lane.model, batch)
                for call, result in zip(batch, results):
                    call.result = result
            except BaseException as exc:  # every caller gets the error; the dispatcher goes on
                for call in batch:
                    call.error = exc
            finally:
                with self._cond:
                    lane.busy -= 1
                    self._used -= lane.cost
                    self._running -= len(batch)
                    self.stats.add(batch[0].kind, lane.name, len(batch), sum(c.rows for c in batch))
                    self._cond.notify_all()
                for call in batch:
                    call.done.set()

    def _encode(self, model, batch: list[_Call]) -> list:
        if self.max_batch == 1:
            return [model.encode(_storage(batch[0].inputs), **batch[0].options)]
        # Merged outputs are split in host memory (a GPU's output comes back to the CPU: 1.5 MB per window
        # for `base` in float16); generate() and align() take host features and move them to the device.
        out = model.encode(_storage(_stack(batch)), to_cpu=True)
        try:
            encoded = np.asarray(out)
        except Exception:  # a dtype numpy cannot hold (bfloat16): only an unmerged call can use it
            if len(batch) == 1:
                return [out]
            raise
        return [_storage(part) for part in _split(encoded, batch)]

    def _detect_language(self, model, batch: list[_Call]) -> list:
        return _split_list(model.detect_language(_storage(_stack(batch))), batch)

    def _generate(self, model, batch: list[_Call]) -> list:
        prompts = [p for call in batch for p in call.items]
        if len(batch) > 1 and batch[0].key[1]:  # previous text: cut every context to the shortest
            prompts = _common_context(prompts, self._sot)
        return _split_list(model.generate(_storage(_stack(batch)), prompts, **batch[0].options), batch)

    def _align(self, model, batch: list[_Call]) -> list:
        start_sequence, median = list(batch[0].key[0]), batch[0].key[1]
        tokens = [t for call in batch for t in call.items]
        frames = [f for call in batch for f in call.extra]
        results = model.align(_storage(_stack(batch)), start_sequence, tokens, frames,
                                    median_filter_width=median)
        return _split_list(results, batch)


_RUNNERS: dict[str, Callable[[CrossRequestBatcher, Any, list[_Call]], list]] = {
    "encode": CrossRequestBatcher._encode,
    "detect_language": CrossRequestBatcher._detect_language,
    "generate": CrossRequestBatcher._generate,
    "align": CrossRequestBatcher._align,
}


def _common_context(prompts: list[list[int]], sot: int) -> list[list[int]]:
    """Cut the previous text of every prompt to the shortest one's length, keeping the latest tokens.

    A prompt with previous text is [<|startofprev|>, *previous, <|startoftranscript|>, *task].
    """
    positions = [p.index(sot) for p in prompts]
    keep = min(positions) - 1
    return [[p[0], *p[i - keep:i], *p[i:]] for p, i in zip(prompts, positions)]


def _array(features) -> np.ndarray:
    array = np.asarray(features)
    return array if array.ndim == 3 else array[None]


def _storage(array):
    if isinstance(array, ctranslate2.StorageView):
        return array
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(array))


def _stack(batch: list[_Call]) -> np.ndarray:
    return batch[0].inputs if len(batch) == 1 else np.concatenate([c.inputs for c in batch])


def _split(array: np.ndarray, batch: list[_Call]) -> list[np.ndarray]:
    parts, start = [], 0
    for call in batch:
        parts.append(array[start:start + call.rows])
        start += call.rows
    return parts


def _split_list(results: list, batch: list[_Call]) -> list[list]:
    parts, start = [], 0
    for call in batch:
        parts.append(list(results[start:start + call.rows]))
        start += call.rows
    return parts


def _freeze(value):
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value

