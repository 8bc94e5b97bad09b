"""Which device CTranslate2 can really compute on, and the compute type that suits it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

log = logging.getLogger("oyez.models")


# CTranslate2 4.x is built against CUDA 12: it links the CUDA runtime statically (so it counts GPUs on
# any recent driver) but loads cuBLAS by this name at its first matrix product on the GPU.
CTRANSLATE2_CUBLAS = "libcublas.so.12"


@lru_cache(maxsize=1)
def cuda_devices() -> int:
    """GPUs CTranslate2 can actually compute on: counted, and only if the cuBLAS it needs loads."""
    import ctranslate2

    try:
        count = ctranslate2.get_cuda_device_count()
    except Exception:  # a CUDA runtime that cannot start counts as none
        return 0
    if count and not _loadable(CTRANSLATE2_CUBLAS):
        log.warning(
            "CTranslate2 sees %d GPU(s) but cannot load %s (CUDA 12's cuBLAS), so it could not transcribe on them; "
            "device=auto uses the CPU. Install CUDA 12's cuBLAS (e.g. pip install nvidia-cublas-cu12 and put its lib "
            "directory on LD_LIBRARY_PATH, or use an nvidia/cuda:12.x image) to use the GPU.",
            count, CTRANSLATE2_CUBLAS,
        )
        return 0
    return count


def _loadable(library: str) -> bool:
    import ctypes

    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


def resolve_device(device: str) -> str:
    """`auto` is CUDA when CTranslate2 sees a GPU, else CPU."""
    if device == "auto":
        return "cuda" if cuda_devices() > 0 else "cpu"
    return device


def auto_compute_type(device: str) -> str:
    """int8 on CPU, float16 on CUDA: the fastest types with no accuracy loss worth measuring on Whisper."""
    return "float16" if resolve_device(device) == "cuda" else "int8"


@dataclass(frozen=True)
class GpuUsage:
    index: int
    utilization_percent: float  # share of the last sample period a kernel ran (NVML)
    memory_used_bytes: int
    memory_total_bytes: int


def gpu_usage() -> list[GpuUsage]:
    """Utilisation and memory of each NVIDIA GPU, from NVML (the `gpu` extra: nvidia-ml-py); [] without either."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver, no GPU
        return []
    try:
        usage = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            usage.append(GpuUsage(index, float(rates.gpu), int(memory.used), int(memory.total)))
        return usage
    except Exception:
        log.debug("NVML could not be read", exc_info=True)
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
