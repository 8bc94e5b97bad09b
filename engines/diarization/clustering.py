"""Speaker clustering that estimates how many speakers there are: spectral clustering with an eigengap.

As 3D-Speaker's CAM++ diarization does: a cosine affinity between the embeddings, pruned to each
row's strongest entries (so one speaker's many chunks form a connected block), its graph Laplacian,
and the number of speakers read from the largest gap between consecutive small eigenvalues; k-means
on the first k eigenvectors gives the clusters. The count is bounded by the caller's `min`/`max` and
by a duration-aware prior (`max_for_duration`): a 30 s clip cannot hold eight speakers, while a
voice heard for a second still forms its own tight block of embeddings and keeps its cluster.

Pure numpy/scipy, so it is unit-tested without torch.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.cluster.vq import kmeans2
from scipy.linalg import eigh

MAX_EMBEDDINGS = 3000  # more are subsampled evenly for the eigendecomposition (O(n^3)); all are assigned after


def max_for_duration(duration_s: float, seconds_per_speaker: float) -> int:
    """At most one speaker per `seconds_per_speaker` of audio (and at least two)."""
    return max(2, math.ceil(duration_s / seconds_per_speaker))


def affinity(embeddings: np.ndarray, prune: float, min_neighbours: int = 6) -> np.ndarray:
    """Cosine similarity, each row keeping its `prune` share (at least `min_neighbours`) strongest entries, symmetrised."""
    x = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    a = x @ x.T
    np.fill_diagonal(a, -1.0)  # itself is no neighbour
    n = a.shape[0]
    keep = min(n, max(min_neighbours, int(math.ceil(prune * n))))
    if keep < n:
        weakest = np.argpartition(a, n - keep, axis=1)[:, : n - keep]
        np.put_along_axis(a, weakest, 0.0, axis=1)
    a = 0.5 * (a + a.T)
    np.fill_diagonal(a, 0.0)
    return np.maximum(a, 0.0)


def spectral_clusters(
    embeddings: np.ndarray,
    min_clusters: int = 1,
    max_clusters: int = 20,
    num_clusters: int | None = None,
    prune: float = 0.1,
    min_neighbours: int = 6,
    seed: int = 0,
    normalised: bool = True,
) -> np.ndarray:
    """Cluster index per embedding (0..k-1), k from the eigengap within [min_clusters, max_clusters]."""
    n = embeddings.shape[0]
    if n <= 2:
        return np.zeros(n, dtype=int)
    max_clusters = max(1, min(max_clusters, n - 1))
    min_clusters = max(1, min(min_clusters, max_clusters))
    a = affinity(embeddings, prune, min_neighbours)
    degree = a.sum(axis=1)
    if normalised:  # symmetric normalised Laplacian: eigenvalues in [0, 2], gaps comparable across files
        scale = 1.0 / np.sqrt(np.maximum(degree, 1e-12))
        laplacian = np.eye(n) - scale[:, None] * a * scale[None, :]
    else:
        laplacian = np.diag(degree) - a
    top = min(n - 1, max_clusters + 1)
    values, vectors = eigh(laplacian, subset_by_index=[0, top])
    if num_clusters is not None:
        k = max(1, min(num_clusters, n))
    else:
        # The gap just past the bound counts too: when it is the largest, there are more voices than
        # allowed and the bound is taken. So does a graph in more pieces (zero eigenvalues) than allowed.
        gaps = np.diff(values[min_clusters - 1 : max_clusters + 2])
        k = min(int(np.argmax(gaps)) + min_clusters, max_clusters) if gaps.size else min_clusters
        if np.sum(values < 1e-8) >= max_clusters:
            k = max_clusters
    if k == 1:
        return np.zeros(n, dtype=int)
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    points = vectors[:, :k]
    for _ in range(5):  # k-means++ restarts; the tightest wins
        centres, labels = kmeans2(points, k, minit="++", seed=rng)
        inertia = float(np.sum((points - centres[labels]) ** 2))
        if inertia < best_inertia and len(np.unique(labels)) == k:
            best, best_inertia = labels, inertia
    if best is None:
        best = labels
    _, best = np.unique(best, return_inverse=True)
    return best


def merge_close_clusters(embeddings: np.ndarray, labels: np.ndarray, threshold: float, keep: int = 1) -> np.ndarray:
    """Merge the two clusters whose centroids are most alike while their cosine exceeds `threshold`."""
    labels = labels.copy()
    while True:
        ids = np.unique(labels)
        if len(ids) <= keep:
            return labels
        c = np.stack([embeddings[labels == i].mean(axis=0) for i in ids])
        c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
        s = c @ c.T
        np.fill_diagonal(s, -np.inf)
        i, j = np.unravel_index(np.argmax(s), s.shape)
        if s[i, j] < threshold:
            return np.unique(labels, return_inverse=True)[1]
        labels[labels == ids[j]] = ids[i]


def subsample(n: int, limit: int = MAX_EMBEDDINGS) -> np.ndarray:
    """Evenly spaced indices, at most `limit` of them."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))
