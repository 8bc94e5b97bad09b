"""Speaker clustering that estimates how many speakers there are: spectral clustering with an eigengap.

As 3D-Speaker's CAM++ diarization does: a cosine affinity between the embeddings, pruned to each
row's strongest entries (so one speaker's many chunks form a connected block), its graph Laplacian,
and the number of speakers read from the largest gap between consecutive small eigenvalues; k-means
on the first k eigenvectors gives the clusters. The count is bounded by the caller's `min`/`max` and
by a duration-aware prior (`max_for_duration`): a 30 s clip cannot hold eight speakers, while a
voice heard for a second still forms its own tight block of embeddings and keeps its cluster.

After the eigengap, three corrections (engines/diarization/pipeline.py applies them in this order):
`split_mixed_clusters` cuts a cluster in two while its halves sound different (the eigengap lumps
voices that each say little), `reassign_minor_clusters` dissolves clusters with too little speech
into their nearest neighbour (3D-Speaker does so by number of embeddings), and `merge_close_clusters`
joins clusters that sound alike (on 30 s of meeting audio k-means cuts one talker's speech by time).

Pure numpy/scipy, so it is unit-tested without torch.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.cluster.vq import kmeans2
from scipy.linalg import eigh

AUTO_PRUNE = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)  # candidate prune shares when the share is chosen per file
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
    split: str = "kmeans",
    auto_prune: tuple[float, ...] = (),
) -> np.ndarray:
    """Cluster index per embedding (0..k-1), k from the eigengap within [min_clusters, max_clusters].

    `split`: `kmeans` on the first k eigenvectors, or `linkage`: the average-linkage tree of the
    embeddings themselves (cosine) cut into k clusters. `auto_prune`: candidate prune shares; the one
    with the clearest gap for its density is taken per file (`choose_prune`), instead of `prune`.
    """
    n = embeddings.shape[0]
    if n <= 2:
        return np.zeros(n, dtype=int)
    max_clusters = max(1, min(max_clusters, n - 1))
    min_clusters = max(1, min(min_clusters, max_clusters))
    if auto_prune:
        prune = choose_prune(embeddings, auto_prune, min_clusters, max_clusters, min_neighbours, normalised)
    laplacian = graph_laplacian(affinity(embeddings, prune, min_neighbours), normalised)
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
    if split == "linkage":
        return linkage_clusters(embeddings, k)
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


def graph_laplacian(a: np.ndarray, normalised: bool) -> np.ndarray:
    """The affinity's graph Laplacian: symmetric normalised (eigenvalues in [0, 2], gaps comparable across
    files) or plain (D - A)."""
    degree = a.sum(axis=1)
    if normalised:
        scale = 1.0 / np.sqrt(np.maximum(degree, 1e-12))
        return np.eye(a.shape[0]) - scale[:, None] * a * scale[None, :]
    return np.diag(degree) - a


def laplacian_values(a: np.ndarray, normalised: bool, top: int) -> np.ndarray:
    """The `top` + 1 smallest eigenvalues of the affinity's Laplacian, and its largest last."""
    n = a.shape[0]
    laplacian = graph_laplacian(a, normalised)
    small = eigh(laplacian, eigvals_only=True, subset_by_index=[0, min(n - 1, top)])
    large = eigh(laplacian, eigvals_only=True, subset_by_index=[n - 1, n - 1])
    return np.concatenate([small, large])


def choose_prune(embeddings: np.ndarray, candidates: tuple[float, ...], min_clusters: int, max_clusters: int,
                 min_neighbours: int = 6, normalised: bool = True) -> float:
    """The prune share with the clearest eigengap for how much it keeps (NME-SC, Park et al. 2019).

    For each candidate p: g = largest gap among the eigenvalues min..max+1, over the largest eigenvalue;
    the candidate with the smallest p / g wins (a sparse graph with a clear gap over a dense one).
    """
    n = embeddings.shape[0]
    best, best_ratio, seen = candidates[0], np.inf, set()
    for p in candidates:
        keep = min(n, max(min_neighbours, int(math.ceil(p * n))))  # what affinity() keeps per row
        if keep in seen:
            continue
        seen.add(keep)
        values = laplacian_values(affinity(embeddings, p, min_neighbours), normalised, max_clusters + 1)
        gaps = np.diff(values[:-1][min_clusters - 1 : max_clusters + 2])
        g = float(gaps.max()) / max(float(values[-1]), 1e-12) if gaps.size else 0.0
        ratio = (keep / n) / max(g, 1e-12)
        if ratio < best_ratio:
            best, best_ratio = p, ratio
    return best


def linkage_clusters(embeddings: np.ndarray, k: int) -> np.ndarray:
    """Average-linkage (cosine) tree of the embeddings cut into k clusters: 0..k-1 per embedding."""
    if k <= 1 or embeddings.shape[0] <= 1:
        return np.zeros(embeddings.shape[0], dtype=int)
    x = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    tree = linkage(x, method="average", metric="cosine")
    labels = fcluster(tree, t=k, criterion="maxclust")
    return np.unique(labels, return_inverse=True)[1]


def cluster_speech(labels: np.ndarray, frames: list[np.ndarray], frame_s: float) -> np.ndarray:
    """Seconds of speech per cluster: the union of its embeddings' active frames (absolute frame indices)."""
    ids = np.unique(labels)
    out = np.zeros(len(ids))
    for j, i in enumerate(ids):
        members = [frames[m] for m in np.flatnonzero(labels == i)]
        out[j] = len(np.unique(np.concatenate(members))) * frame_s if members else 0.0
    return out


def reassign_minor_clusters(embeddings: np.ndarray, labels: np.ndarray, speech_s: np.ndarray, min_speech_s: float,
                            keep: int = 1) -> np.ndarray:
    """Dissolve clusters holding less than `min_speech_s` of speech into their nearest major cluster.

    As 3D-Speaker's minor-cluster filter, but by seconds of speech rather than number of embeddings:
    each embedding of a minor cluster goes to the major centroid it resembles most (cosine). The
    clusters with the most speech are kept major even when short, so that at least `keep` remain.
    `speech_s` is per cluster, in the order of np.unique(labels).
    """
    ids = np.unique(labels)
    if len(ids) <= max(keep, 1):
        return np.unique(labels, return_inverse=True)[1]
    order = np.argsort(-speech_s, kind="stable")
    major = [ids[j] for j in order if speech_s[j] >= min_speech_s]
    for j in order:
        if len(major) >= max(keep, 1):
            break
        if ids[j] not in major:
            major.append(ids[j])
    x = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    centres = np.stack([x[labels == i].mean(axis=0) for i in major])
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    labels = labels.copy()
    minor = ~np.isin(labels, major)
    if minor.any():
        labels[minor] = np.asarray(major)[np.argmax(x[minor] @ centres.T, axis=1)]
    return np.unique(labels, return_inverse=True)[1]


def split_mixed_clusters(embeddings: np.ndarray, labels: np.ndarray, threshold: float, speech, min_speech_s: float,
                         max_clusters: int, min_size: int = 6, seed: int = 0) -> np.ndarray:
    """Split a cluster in two while its halves' centroids are less alike (cosine) than `threshold`.

    The eigengap under-counts when several voices each say little: they share one cluster. Each
    cluster is cut in two (2-means on the normalised embeddings, seeded restarts); the cut is kept
    when the two centroids' cosine is below `threshold` and each half holds at least `min_size`
    embeddings and `min_speech_s` of speech (`speech(mask)` gives the seconds of a set of embeddings),
    and then its halves are tried again; at most `max_clusters` in all.
    """
    x = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    labels = np.unique(labels, return_inverse=True)[1]
    rng = np.random.default_rng(seed)
    pending = list(np.unique(labels))
    while pending and len(np.unique(labels)) < max_clusters:
        k = pending.pop(0)
        members = np.flatnonzero(labels == k)
        if len(members) < 2 * min_size:
            continue
        best, best_inertia = None, np.inf
        for _ in range(5):
            centres, halves = kmeans2(x[members], 2, minit="++", seed=rng)
            inertia = float(np.sum((x[members] - centres[halves]) ** 2))
            if inertia < best_inertia and len(np.unique(halves)) == 2:
                best, best_inertia = halves, inertia
        if best is None:
            continue
        a, b = members[best == 0], members[best == 1]
        ca, cb = x[a].mean(axis=0), x[b].mean(axis=0)
        cosine = float(ca @ cb / max(np.linalg.norm(ca) * np.linalg.norm(cb), 1e-12))
        if cosine >= threshold or min(len(a), len(b)) < min_size:
            continue
        if min(speech(np.isin(np.arange(len(labels)), a)), speech(np.isin(np.arange(len(labels)), b))) < min_speech_s:
            continue
        new = labels.max() + 1
        labels[b] = new
        pending += [k, new]
    return np.unique(labels, return_inverse=True)[1]


def merge_close_clusters(embeddings: np.ndarray, labels: np.ndarray, threshold: float, keep: int = 1) -> np.ndarray:
    """Merge the two clusters whose centroids are most alike while their cosine exceeds `threshold`."""
    labels = labels.copy()
    while True:
        ids = np.unique(labels)
        if len(ids) <= keep:  # numbered 0..k-1 again: pyannote's assignment takes max + 1 as the count
            return np.unique(labels, return_inverse=True)[1]
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
