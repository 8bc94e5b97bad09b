"""How many requests decode at once, how the cores are split, and how many calls may merge into one.

Every model call goes through the scheduler of engines/batching.py. On CPU the cores are split
among replicas (one per core up to MAX_CPU_REPLICAS, one thread each on 2 cores), so concurrent requests decode side
by side: on 2 cores two one-thread calls at once do about a third more work per second than one
two-thread call. A *solo* replica with every core is loaded beside them, and a request that is
decoding alone runs on it, as fast as faster-whisper alone with all cores. Merging calls of
different requests into one batched call gains nothing on CPU (a call of two windows takes as long
as two calls), so it is off there; on CUDA it is on, with many requests admitted at once so that
batches fill. Figures: docs/benchmarks.md ("Batching across requests and a lone request").
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


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, as taskset or a cpuset pins it), else all of them."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def plan(device: str, num_workers: int = 0, cpu_threads: int = 0, max_concurrency: int = 0,
         cores: int | None = None, max_batch: int = 0, solo_replica: bool = True) -> Parallelism:
    """Fill in the settings left at 0 (auto) for `device` ("cpu" or "cuda", already resolved)."""
    cores = cores or available_cores()
    if device == "cuda":
        batch = max_batch or CUDA_MAX_BATCH
        replicas = num_workers or 2
        concurrency = max_concurrency or (CUDA_CONCURRENCY if batch > 1 else replicas)
        return Parallelism(replicas=replicas, threads=cpu_threads, concurrency=concurrency, max_batch=batch)
    replicas = num_workers or max(1, min(MAX_CPU_REPLICAS, cores))
    threads = cpu_threads or max(1, cores // replicas)
    budget = replicas * threads  # the cores the plan (or the operator) gives this model
    solo = budget if solo_replica and threads < budget else 0
    return Parallelism(replicas=replicas, threads=threads, concurrency=max_concurrency or replicas,
                       max_batch=max_batch or CPU_MAX_BATCH, solo_threads=solo)
