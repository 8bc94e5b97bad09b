"""How many requests decode at once and how the cores are split between them.

On CPU, one CTranslate2 replica per concurrent request with the cores divided between them
keeps every core busy: a single request leaves cores idle while it runs VAD, features and
Python between model calls, and replicas that each take every core oversubscribe the CPU,
which slows OpenMP threads down badly on a busy machine. Measured on 2 cores with `base`
int8 (docs/benchmarks.md): two replicas of one thread beat one replica of two threads, with
one request or two at a time. On CUDA, two replicas let two requests use the GPU at once
and the rest of each request (VAD, features) overlaps; this is not measured here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MAX_CPU_REPLICAS = 4


@dataclass(frozen=True)
class Parallelism:
    replicas: int  # CTranslate2 num_workers: decodes that can run inside one loaded model at once
    threads: int  # CTranslate2 intra-op threads per replica on CPU (0 = library default)
    concurrency: int  # requests admitted to run at once per loaded model


def plan(device: str, num_workers: int = 0, cpu_threads: int = 0, max_concurrency: int = 0,
         cores: int | None = None) -> Parallelism:
    """Fill in the settings left at 0 (auto) for `device` ("cpu" or "cuda", already resolved)."""
    cores = cores or os.cpu_count() or 1
    if device == "cuda":
        replicas = num_workers or 2
        threads = cpu_threads
    else:
        replicas = num_workers or max(1, min(MAX_CPU_REPLICAS, cores))
        threads = cpu_threads or max(1, cores // replicas)
    return Parallelism(replicas=replicas, threads=threads, concurrency=max_concurrency or replicas)
