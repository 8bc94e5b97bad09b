"""Packaging checks that need no Docker engine: lint the Dockerfile, parse the compose file, run every
project command the image runs (build the package, scripts/install-torch, `oyez prepare`, the HEALTHCHECK,
`oyez serve`), and validate the Kubernetes manifests offline against the Kubernetes schemas.
The images themselves are built and run by scripts/test-docker (docs/deployment.md).
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

from server.settings import Settings, environment_names
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


def of(kind: str, stage: str | None = None) -> list[str]:
    """Arguments of every `kind` instruction; stage="final" or "build" keeps those of one stage."""
    stages: list[list[tuple[str, str]]] = [[]]  # the global ARGs before the first FROM, then one per FROM
    for word, args in instructions():
        if word == "FROM":
            stages.append([])
        stages[-1].append((word, args))
    named = {part[0][1].split(" AS ")[-1]: part for part in stages[1:] if " AS " in part[0][1]}
    chosen = stages if stage is None else [stages[-1]] if stage == "final" else [named[stage]]
    return [args for part in chosen for word, args in part if word == kind]


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or (BIN / "hadolint" if (BIN / "hadolint").exists() else None)
    if hadolint is None:
        pytest.skip("hadolint is not installed (the test extra installs it on Linux x86_64)")
    result = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape():
    assert of("ARG")[0].startswith("BASE_IMAGE=python:3")
    # Two stages on the same base: the build stage installs, the image only copies its results.
    assert of("FROM") == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"]
    assert sorted(of("COPY", "final")) == [
        "--from=build --chown=10001:10001 /var/cache/oyez /var/cache/oyez", "--from=build /opt/venv /opt/venv"]
    final_runs = " ".join(of("RUN", "final"))
    for tool in ("pip", "gcc", "build-essential", "python3-venv", "python3-dev"):
        assert tool not in final_runs, f"the final stage installs {tool}"
    assert "PIP_NO_CACHE_DIR=1" in " ".join(of("ENV", "build")) and "--no-cache-dir" in " ".join(of("RUN", "build"))
    user = of("USER")[-1]
    assert re.fullmatch(r"[1-9]\d{3,}:[1-9]\d{3,}", user), f"run as a numeric non-root user, not {user!r}"
    entry = json.loads(of("ENTRYPOINT")[0])
    assert entry == ["/opt/venv/bin/oyez", "serve"]
    health = of("HEALTHCHECK")[0]
    assert "/ready" in health and "--start-period" in health
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    env = " ".join(of("ENV", "final"))
    for writable in ("HOME=/var/cache/oyez/", "TMPDIR=/var/cache/oyez/"):  # --read-only: only the volume is written
        assert writable in env
    assert "OYEZ_HOST=0.0.0.0" in env and "OYEZ_PORT=8000" in env and of("EXPOSE") == ["8000"]
    for copy in of("COPY", "build"):
        *sources, _ = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert f"!{source.rstrip('/')}" in dockerignore, f"COPY {source}: excluded by .dockerignore"


def run_commands() -> list[str]:
    commands = []
    for run in of("RUN"):
        for part in re.split(r"&&|;|\bthen\b|\bfi\b", run):
            part = part.strip()
            if part and part != "if":
                commands.append(re.sub(r"^if\s+!?\s*", "", part))
    return commands


# What each RUN command is, and where it is exercised outside Docker.
OS_PLUMBING = ("command -v", "apt-get", "rm -rf /var/lib/apt/lists", "groupadd", "useradd", "chown", "[ -n", "mkdir -p", "install -d")
PROJECT = {
    "python3 -m venv": "scripts/_bootstrap.sh (./scripts/serve, ./scripts/test)",
    "sh scripts/install-torch": "test_install_torch_pins_and_fallback, scripts/_bootstrap.sh",
    "/opt/venv/bin/pip install": "test_the_package_builds_with_every_module",
    "/opt/venv/bin/oyez prepare": "test_oyez_prepare_joins_the_bundled_weights",
}


def test_every_dockerfile_command_is_known_and_exercised():
    for command in run_commands():
        if command.startswith(OS_PLUMBING):
            continue
        assert any(command.startswith(prefix) for prefix in PROJECT), f"RUN `{command}` is exercised nowhere"
    bootstrap = (ROOT / "scripts" / "_bootstrap.sh").read_text()
    assert "-m venv" in bootstrap and "pip install" in bootstrap and "scripts/install-torch" in bootstrap
    assert 'OYEZ_VENV' in bootstrap
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


def healthcheck(port: int | None) -> int:
    """Run the Dockerfile's HEALTHCHECK command as is (this venv's Python) with OYEZ_PORT set, or unset."""
    cmd = json.loads(of("HEALTHCHECK")[0].split("CMD", 1)[1])
    env = {k: v for k, v in os.environ.items() if k != "OYEZ_PORT"}
    if port is not None:
        env["OYEZ_PORT"] = str(port)
    return subprocess.run([sys.executable, *cmd[1:]], env=env, capture_output=True, timeout=30).returncode


def test_healthcheck_follows_oyez_port(server_url):
    from tests.conftest import _free_port

    port = int(server_url.rsplit(":", 1)[1])
    assert healthcheck(port) == 0
    assert healthcheck(_free_port()) != 0
    if port != 8000:  # unset, it asks the image's default port, where this server is not
        assert healthcheck(None) != 0


def diarize_pins() -> list[str]:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return sorted(p for p in extras["diarize"] if p.startswith(("torch==", "torchaudio==")))


def test_install_torch_pins_and_fallback(tmp_path):
    """scripts/install-torch installs what the diarize extra pins; an index that does not answer is skipped
    quickly with a warning (the project install then takes torch from PyPI), and so is `auto` here when
    PyTorch's CPU index is unreachable."""
    script = ROOT / "scripts" / "install-torch"
    pins = re.search(r'^PINS="([^"]+)"', script.read_text(), re.M).group(1).split()
    assert sorted(pins) == diarize_pins()
    from tests.conftest import _free_port

    dead = f"http://127.0.0.1:{_free_port()}/whl/cpu"
    result = subprocess.run(["sh", str(script), sys.executable, dead], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and f"WARNING: {dead} does not answer" in result.stderr, result.stderr
    result = subprocess.run(["sh", str(script), sys.executable, ""], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == ""  # empty index: PyPI, nothing to do beforehand


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_has_cpu_speech_and_gpu_services(compose):
    services = compose["services"]
    assert set(services) >= {"oyez-cpu", "oyez-speech", "oyez-gpu"}
    cpu, gpu = services["oyez-cpu"], services["oyez-gpu"]
    assert cpu["environment"]["OYEZ_DEVICE"] == "cpu" and gpu["environment"]["OYEZ_DEVICE"] == "cuda"
    assert gpu["build"]["args"]["BASE_IMAGE"].startswith("nvidia/cuda:")
    assert "cudnn" in gpu["build"]["args"]["BASE_IMAGE"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices and devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "deploy" not in cpu
    assert {p.split(":")[-1] for s in services.values() for p in s["ports"]} == {"8000"}
    assert len({p.split(":")[0] for s in services.values() for p in s["ports"]}) == len(services)


def header_builds() -> dict[str, dict[str, str]]:
    """The Dockerfile header's `docker build` commands (continuation lines joined): image tag -> build arguments."""
    commands, pending = [], None
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if pending is None and text.startswith("docker build"):
            pending = ""
        if pending is not None:
            pending += text.rstrip("\\").strip() + " "
            if not text.endswith("\\"):
                commands.append(pending.strip())
                pending = None
    builds = {}
    for command in commands:
        assert command.endswith(" ."), command
        args = dict(re.findall(r"--build-arg (\w+)=(\S*)", command))
        builds[re.search(r"-t (\S+)", command).group(1)] = args
    return builds


def test_one_command_per_variant_the_same_in_the_header_compose_and_docs(compose):
    builds = header_builds()
    assert builds == {
        "oyez:cpu": {},
        "oyez:speech": {"EXTRAS": ""},
        "oyez:cuda": {"BASE_IMAGE": compose["services"]["oyez-gpu"]["build"]["args"]["BASE_IMAGE"],
                      "TORCH_INDEX": compose["services"]["oyez-gpu"]["build"]["args"]["TORCH_INDEX"],
                      "EXTRAS": "diarize,gpu"},
    }
    assert "cudnn" in builds["oyez:cuda"]["BASE_IMAGE"] and "/whl/cu" in builds["oyez:cuda"]["TORCH_INDEX"]
    for service in compose["services"].values():
        build = service["build"]
        args = {} if isinstance(build, str) else {k: v or "" for k, v in build.get("args", {}).items()}
        assert builds[service["image"]] == args, service["image"]
    docs = " ".join((ROOT / "docs" / "deployment.md").read_text().replace("\\\n", " ").split())
    for tag, args in builds.items():
        flags = "".join(f"--build-arg {k}={v} " for k, v in args.items())
        assert f"docker build {flags}-t {tag} ." in docs, tag


def test_compose_volume_env_healthcheck_and_grace(compose):
    volumes = compose["volumes"]
    cache_dir = next(a for a in of("ENV")).split("OYEZ_CACHE_DIR=")[1].split()[0]
    known = environment_names()
    for name, service in compose["services"].items():
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
        assert service["read_only"] is True  # the image writes only to the cache volume



# ---- Kubernetes (deploy/k8s): validated offline against the schemas kubernetes-validate ships ----
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.29.0"  # the oldest release these manifests claim (autoscaling/v2, policy/v1, sidecar-free)


def k8s_documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def k8s_validate(document: dict) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="the test extra installs kubernetes-validate")
    for version in (K8S_VERSION, kv.utils.latest_version() + ".0"):
        kv.validate(document, version, strict=True)  # strict: an unknown field is an error, not ignored


def test_k8s_manifests_are_valid_kubernetes_objects():
    kinds = []
    for name in ("oyez.yaml", "hpa-queue-depth.yaml"):
        for document in k8s_documents(name):
            k8s_validate(document)
            kinds.append(document["kind"])
    assert sorted(kinds) == ["Deployment", "HorizontalPodAutoscaler", "HorizontalPodAutoscaler",
                             "PodDisruptionBudget", "Service"]


def test_k8s_validation_catches_mistakes():
    """The validator is no rubber stamp: a misspelt field and a wrong type are both rejected."""
    kv = pytest.importorskip("kubernetes_validate")
    deployment = k8s_documents("oyez.yaml")[0]
    misspelt = json.loads(json.dumps(deployment))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    wrong_type = json.loads(json.dumps(deployment))
    wrong_type["spec"]["replicas"] = "two"
    for bad in (misspelt, wrong_type):
        with pytest.raises(kv.ValidationError):
            kv.validate(bad, K8S_VERSION, strict=True)


def test_k8s_deployment_probes_grace_and_security():
    deployment, service, hpa, pdb = k8s_documents("oyez.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert set(env) <= environment_names()
    port = int(env["OYEZ_PORT"])
    assert container["ports"][0]["containerPort"] == port == int(of("EXPOSE")[0])
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pause + float(env["OYEZ_SHUTDOWN_TIMEOUT_SECONDS"])
    uid, gid = (int(x) for x in of("USER")[-1].split(":"))
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    cache_dir = " ".join(of("ENV", "final")).split("OYEZ_CACHE_DIR=")[1].split()[0]
    assert [m["mountPath"] for m in container["volumeMounts"]] == [cache_dir]
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == labels == pdb["spec"]["selector"]["matchLabels"]
    assert labels.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # a drain never blocks for good


def test_k8s_queue_depth_autoscaler_names_a_metric_oyez_exports():
    from server.metrics import Metrics

    (hpa,) = k8s_documents("hpa-queue-depth.yaml")
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert metric == "oyez_queue_depth"
    assert f'"{metric}"' in Path(sys.modules[Metrics.__module__].__file__).read_text()


def test_rayservice_embeds_serve_yaml_and_its_pods_are_valid():
    """RayService is KubeRay's CRD, whose schema no offline validator ships: its pod templates are validated
    as core/v1 PodTemplates, its Serve config must be deploy/ray/serve.yaml (checked against Ray's own schema
    when Ray is installed), and the rest by shape."""
    (rayservice,) = k8s_documents("rayservice.yaml")
    assert (rayservice["apiVersion"], rayservice["kind"]) == ("ray.io/v1", "RayService")
    serve_config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert serve_config == yaml.safe_load((ROOT / "deploy" / "ray" / "serve.yaml").read_text())
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())  # KubeRay wants strings
        k8s_validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"},
                      "template": group["template"]})
    deployment = serve_config["applications"][0]["deployments"][0]
    for worker in cluster["workerGroupSpecs"]:
        assert worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"]
        assert worker["template"]["spec"]["terminationGracePeriodSeconds"] > deployment["graceful_shutdown_timeout_s"]
        cpus = float(worker["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"])
        assert cpus >= deployment["ray_actor_options"]["num_cpus"]


def test_serve_yaml_matches_oyez_admission_control(monkeypatch):
    config = yaml.safe_load((ROOT / "deploy" / "ray" / "serve.yaml").read_text())
    (app,) = config["applications"]
    assert app["import_path"] == "server.ray_serve:app" and config["http_options"]["port"] == 8000
    env = app["runtime_env"]["env_vars"]
    assert set(env) <= environment_names()
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    settings = Settings()
    (deployment,) = app["deployments"]
    assert deployment["max_ongoing_requests"] == settings.scheduler.max_concurrency + settings.scheduler.max_queue
    assert deployment["ray_actor_options"]["num_cpus"] == settings.whisper.cpu_threads
    assert deployment["graceful_shutdown_timeout_s"] > settings.shutdown_timeout_seconds
    autoscaling = deployment["autoscaling_config"]
    assert autoscaling["min_replicas"] <= autoscaling["initial_replicas"] <= autoscaling["max_replicas"]
    assert autoscaling["target_ongoing_requests"] < deployment["max_ongoing_requests"]
    schema = pytest.importorskip("ray.serve.schema", reason="Ray's own schema needs the `ray` extra")
    schema.ServeDeploySchema.model_validate(config) if hasattr(schema.ServeDeploySchema, "model_validate") \
        else schema.ServeDeploySchema.parse_obj(config)
