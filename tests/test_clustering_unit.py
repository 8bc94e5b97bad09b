"""Spectral clustering and its speaker count (engines/diarization/clustering.py), on synthetic embeddings (no models)."""

from __future__ import annotations

import numpy as np
import pytest

from engines.diarization.clustering import (
    AUTO_PRUNE,
    affinity,
    choose_prune,
    cluster_speech,
    linkage_clusters,
    max_for_duration,
    merge_close_clusters,
    reassign_minor_clusters,
    spectral_clusters,
    subsample,
)


def voices(sizes: list[int], spread: float = 0.6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of len(sizes) voices: a random direction each in 192 dimensions, plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(sizes), 192))
    x = np.concatenate([c + spread * rng.standard_normal((n, 192)) * np.linalg.norm(c) / np.sqrt(192)
                        for c, n in zip(centres, sizes)])
    truth = np.concatenate([np.full(n, k) for k, n in enumerate(sizes)])
    return x, truth


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = {(int(i), int(j)) for i, j in zip(a, b)}
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("sizes", [[120, 80], [60, 60, 60], [200, 90, 40, 12], [50, 40, 30, 30, 25, 20, 15, 10]])
def test_the_eigengap_finds_the_number_of_voices(sizes):
    x, truth = voices(sizes)
    labels = spectral_clusters(x, max_clusters=10)
    assert same_partition(labels, truth)


def test_one_voice_is_one_cluster():
    x, _ = voices([150])
    assert len(set(spectral_clusters(x, max_clusters=8).tolist())) == 1


def test_a_voice_heard_briefly_keeps_its_cluster():
    """Ten embeddings (a 1 s turn seen by ten overlapping chunks) beside 300 of two other voices."""
    x, truth = voices([180, 120, 10], seed=3)
    labels = spectral_clusters(x, max_clusters=6)
    assert same_partition(labels, truth)


def test_bounds_and_a_given_count_are_obeyed():
    x, _ = voices([60, 60, 60, 60])
    assert len(set(spectral_clusters(x, max_clusters=2).tolist())) == 2
    assert len(set(spectral_clusters(x, min_clusters=5, max_clusters=8).tolist())) >= 5
    assert len(set(spectral_clusters(x, num_clusters=3).tolist())) == 3


def test_duration_prior():
    assert max_for_duration(1.0, 10.0) == 2
    assert max_for_duration(30.0, 10.0) == 3
    assert max_for_duration(600.0, 10.0) == 60


def test_affinity_keeps_the_strongest_neighbours_and_is_symmetric():
    x, _ = voices([30, 30])
    a = affinity(x, prune=0.1)
    assert np.allclose(a, a.T) and np.all(np.diag(a) == 0) and np.all(a >= 0)
    assert np.all((a > 0).sum(axis=1) >= 6)
    assert (a > 0).sum() < 0.5 * a.size


def test_close_clusters_merge_and_distinct_ones_do_not():
    x, truth = voices([50, 50, 50])
    split = truth.copy()
    split[:25] = 3  # one voice cut in two
    merged = merge_close_clusters(x, split, threshold=0.8)
    assert same_partition(merged, truth)
    assert same_partition(merge_close_clusters(x, truth, threshold=0.8), truth)
    # Merged down to `keep`, the labels are still numbered 0..k-1 (pyannote counts max + 1 clusters).
    one = merge_close_clusters(x, split + 5, threshold=-1.0)
    assert set(one.tolist()) == {0}
    two = merge_close_clusters(x, split + 5, threshold=-1.0, keep=2)
    assert set(two.tolist()) == {0, 1}


def test_subsample_is_even_and_bounded():
    assert len(subsample(100, 1000)) == 100
    picked = subsample(10000, 3000)
    assert len(picked) == 3000 and picked[0] == 0 and picked[-1] == 9999


@pytest.mark.parametrize("sizes", [[120, 80], [60, 60, 60], [50, 40, 30, 30, 25, 20, 15, 10]])
def test_the_tree_cut_at_the_eigengap_count_finds_the_voices(sizes):
    x, truth = voices(sizes)
    assert same_partition(linkage_clusters(x, len(sizes)), truth)
    assert same_partition(spectral_clusters(x, max_clusters=10, split="linkage"), truth)
    assert len(set(linkage_clusters(x, 1).tolist())) == 1


@pytest.mark.parametrize("sizes", [[120, 80], [60, 60, 60], [200, 90, 40, 12]])
def test_the_prune_chosen_per_file_still_finds_the_voices(sizes):
    x, truth = voices(sizes)
    assert choose_prune(x, AUTO_PRUNE, 1, 10) in AUTO_PRUNE
    assert same_partition(spectral_clusters(x, max_clusters=10, auto_prune=AUTO_PRUNE), truth)


def test_cluster_speech_is_the_union_of_its_embeddings_frames():
    labels = np.array([0, 0, 1])
    frames = [np.arange(0, 100), np.arange(50, 150), np.arange(1000, 1010)]  # two overlapping chunks, one short
    assert np.allclose(cluster_speech(labels, frames, 0.02), [3.0, 0.2])


def test_a_cluster_with_too_little_speech_joins_the_voice_it_resembles():
    x, truth = voices([40, 40, 40])
    split = truth.copy()
    split[:5] = 3  # five embeddings of voice 0 split off into a cluster of their own
    speech = np.array([20.0, 20.0, 20.0, 0.8])  # per cluster, in np.unique order: the split-off one holds 0.8 s
    assert same_partition(reassign_minor_clusters(x, split, speech, min_speech_s=1.0), truth)
    # A real voice with enough speech stays; and `keep` clusters always remain, the ones with most speech.
    assert same_partition(reassign_minor_clusters(x, truth, np.array([20.0, 20.0, 20.0]), min_speech_s=1.0), truth)
    short = reassign_minor_clusters(x, truth, np.array([0.5, 0.4, 0.3]), min_speech_s=1.0, keep=2)
    assert len(set(short.tolist())) == 2 and len(set(short[truth == 0].tolist())) == 1


def test_a_cluster_holding_two_voices_is_split_and_one_voice_is_not():
    from engines.diarization.clustering import split_mixed_clusters

    x, truth = voices([60, 30, 20])
    merged = np.minimum(truth, 1)  # voices 1 and 2 share a cluster
    plenty = lambda mask: 10.0 * mask.sum()  # noqa: E731 - seconds of speech of a set of embeddings
    assert same_partition(split_mixed_clusters(x, merged, 0.5, plenty, 1.0, max_clusters=8), truth)
    assert same_partition(split_mixed_clusters(x, truth, 0.5, plenty, 1.0, max_clusters=8), truth)
    # A half with too little speech, or the bound on the count, keeps the cluster whole.
    assert same_partition(split_mixed_clusters(x, merged, 0.5, lambda mask: 0.5, 1.0, max_clusters=8), merged)
    assert same_partition(split_mixed_clusters(x, merged, 0.5, plenty, 1.0, max_clusters=2), merged)
