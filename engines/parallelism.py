"""How many requests decode at once, how the cores are split, and how many windows share one model call.

With batching across requests (the default, engines/batching.py) one loaded model has one
CTranslate2 replica per device that owns every core, and one dispatcher feeding it: a lone
request decodes as fast as faster-whisper alone with all cores, and concurrent requests have
their windows merged into batched calls instead of each taking a slice of the cores. More
requests are admitted at once than there are replicas, so the batches have something to merge;
their Python side (VAD, features, the decode loop) runs in their own threads meanwhile.
Figures: docs/benchmarks.md ("Batching across requests").

`max_batch = 1` turns merging off and restores the earlier layout: on CPU one replica per
concurrent request with the cores divided between them (two replicas of one thread on 2 cores).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MAX_CPU_REPLICAS = 4
CPU_MAX_BATCH = 1  # merging gains nothing on CPU: a call of two windows takes as long as two calls
CUDA_MAX_BATCH = 32
CUDA_CONCURRENCY = 64


@dataclass(frozen=True)
class Parallelism:
    replicas: int  # CTranslate2 num_workers: model calls that can run inside one loaded model at once
    threads: int  # CTranslate2 intra-op threads per replica on CPU (0 = library default)
    concurrency: int  # requests admitted to run at once per loaded model
    max_batch: int = 1  # rows one merged model call may carry; 1 = each request calls the model alone
    solo_threads: int = 0  # CPU: threads of the extra replica a lone request decodes on (0 = none)


def plan(device: str, num_workers: int = 0, cpu_threads: int = 0, max_concurrency: int = 0,
         cores: int | None = None, max_batch: int = 0, solo_replica: bool = True) -> Parallelism:
    """Fill in the settings left at 0 (auto) for `device` ("cpu" or "cuda", already resolved)."""
    cores = cores or os.cpu_count() or 1
    if device == "cuda":
        batch = max_batch or CUDA_MAX_BATCH
        replicas = num_workers or 2
        concurrency = max_concurrency or (CUDA_CONCURRENCY if batch > 1 else replicas)
        return Parallelism(replicas=replicas, threads=cpu_threads, concurrency=concurrency, max_batch=batch)
    replicas = num_workers or max(1, min(MAX_CPU_REPLICAS, cores))
    threads = cpu_threads or max(1, cores // replicas)
    solo = cores if solo_replica and threads < cores else 0
    return Parallelism(replicas=replicas, threads=threads, concurrency=max_concurrency or replicas,
                       max_batch=max_batch or CPU_MAX_BATCH, solo_threads=solo)
