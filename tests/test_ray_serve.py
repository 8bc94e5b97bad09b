"""Oyez on Ray Serve, for real: `serve run` on deploy/ray/serve.yaml (2 fixed replicas of 1 CPU each on a
Ray head started on this machine), called through Ray's HTTP proxy with the official SDK.

Needs the `ray` extra; skipped without it (CI's venv has no Ray: run `scripts/test-ray`). A Ray head and two
replicas take a minute or two to start on two busy cores.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray.serve", reason="the `ray` extra is not installed (scripts/test-ray installs it)")

import openai  # noqa: E402
from openai import OpenAI  # noqa: E402

from tests.conftest import _free_port  # noqa: E402
from tests.helpers import DATA, ROOT, read_tsv, wer  # noqa: E402

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
REPLICA = "x-oyez-replica"


def ray_config(port: int, cache: Path) -> dict:
    """deploy/ray/serve.yaml as shipped, on a free loopback port with 2 fixed replicas instead of autoscaling."""
    config = yaml.safe_load((ROOT / "deploy" / "ray" / "serve.yaml").read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    app = config["applications"][0]
    app["runtime_env"]["env_vars"]["OYEZ_CACHE_DIR"] = str(cache)
    deployment = app["deployments"][0]
    deployment.pop("autoscaling_config")
    deployment["num_replicas"] = 2
    return config


@pytest.fixture(scope="module")
def ray_serve(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray")
    port = _free_port()
    config = tmp / "serve.yaml"
    config.write_text(yaml.safe_dump(ray_config(port, tmp / "cache")))
    log = open(tmp / "serve-run.log", "wb")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [str(BIN / "serve"), "run", str(config)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            replicas = wait_for_replicas(url, proc, 2, deadline=time.monotonic() + 600)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; serve run's log ends:\n{(tmp / 'serve-run.log').read_text()[-4000:]}")
        yield url, replicas
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # serve run shuts Serve and its local Ray down
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, timeout=120)


def wait_for_replicas(url: str, proc: subprocess.Popen, count: int, deadline: float, exclude=()) -> set[str]:
    """Poll /ready through the proxy until `count` different replicas (none of `exclude`) answered ready."""
    import httpx

    seen: set[str] = set()
    while time.monotonic() < deadline:
        assert proc.poll() is None, "serve run exited"
        try:
            r = httpx.get(url + "/ready", timeout=10)
            if r.status_code == 200 and r.headers.get(REPLICA) not in exclude:
                seen.add(r.headers[REPLICA])
                if len(seen) >= count:
                    return seen
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"only {sorted(seen)} ready before the deadline")


def short_clips() -> list[tuple[Path, str]]:
    """Two read sentences of 7-9 s from tests/data, with their references."""
    refs = {r["file"]: r["transcript"] for r in read_tsv(DATA / "references.tsv")}
    return [(DATA / name, refs[name]) for name in ("librivox_0870.wav", "p001.mp3")]


def transcribe(client: OpenAI, path: Path) -> tuple[int, str | None, str]:
    with open(path, "rb") as fh:
        raw = client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=fh)
    return raw.http_response.status_code, raw.headers.get(REPLICA), raw.parse().text


def test_sdk_json_and_stream_through_the_serve_proxy(ray_serve):
    url, _ = ray_serve
    client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
    reference = next(r["transcript"] for r in read_tsv(DATA / "references.tsv") if r["file"] == "jfk.wav")
    status, replica, text = transcribe(client, DATA / "jfk.wav")
    assert status == 200 and replica and wer(reference, text) < 0.1, text
    with open(DATA / "jfk.wav", "rb") as fh:
        events = list(client.audio.transcriptions.create(model="gpt-4o-mini-transcribe", file=fh, stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert events[-1].type == "transcript.text.done" and deltas
    assert "".join(deltas).strip() == events[-1].text.strip()
    assert wer(reference, events[-1].text) < 0.1, events[-1].text


def test_concurrent_requests_spread_over_both_replicas(ray_serve):
    url, replicas = ray_serve
    client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    clips = short_clips()
    jobs = [clips[i % len(clips)] for i in range(8)]
    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda job: transcribe(client, job[0]), jobs))
    for (status, _, text), (_, reference) in zip(results, jobs):
        assert status == 200 and wer(reference, text) < 0.25, (reference, text)
    assert {replica for _, replica, _ in results} == replicas  # both served, and no one else
    print("8 concurrent requests:", dict(collections.Counter(replica for _, replica, _ in results)))


def test_a_killed_replica_fails_no_request_of_the_other_and_is_replaced(ray_serve):
    url, replicas = ray_serve
    victim, survivor = sorted(replicas)
    client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    clips = short_clips()
    jobs = [clips[i % len(clips)] for i in range(8)]

    def attempt(job):  # the requests the killed replica held fail; which ones is Ray's choice
        try:
            return transcribe(client, job[0])
        except openai.APIStatusError as exc:
            return exc.status_code, exc.response.headers.get(REPLICA), exc.message
        except openai.APIConnectionError as exc:
            return None, None, repr(exc)

    with cf.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(attempt, job) for job in jobs]
        time.sleep(3)  # every request is in a replica by now: each admits 17 (serve.yaml)
        killed = subprocess.run(
            [sys.executable, "-c",
             "import ray, sys; ray.init(address='auto', logging_level='error', log_to_driver=False); "
             "ray.kill(ray.get_actor(f'SERVE_REPLICA::oyez#oyez#{sys.argv[1]}', namespace='serve'))", victim],
            capture_output=True, text=True, timeout=120,
        )
        assert killed.returncode == 0, killed.stderr[-2000:]
        results = [f.result() for f in futures]
    on_survivor = [(r, job) for r, job in zip(results, jobs) if r[1] == survivor]
    assert on_survivor, results
    for (status, _, text), (_, reference) in on_survivor:
        assert status == 200 and wer(reference, text) < 0.25, (reference, text)
    failed = [r for r in results if r[0] != 200]
    assert all(r[1] != survivor for r in failed), failed
    print(f"killed {victim}: {len(on_survivor)} requests answered by {survivor}, all 200 and correct; "
          f"{len(results) - len(on_survivor) - len(failed)} answered 200 elsewhere, {len(failed)} failed: "
          f"{[r[:1] + r[2:] for r in failed]}")
    # Serve's controller starts a replacement; the survivor keeps answering meanwhile.
    new = wait_for_replicas(url, _Alive(), 1, deadline=time.monotonic() + 300, exclude={victim, survivor})
    status, replica, text = transcribe(client, clips[0][0])
    assert status == 200 and replica in new | {survivor} and wer(clips[0][1], text) < 0.25
    print(f"replacement replica {sorted(new)} ready")


class _Alive:
    """Stands for the fixture's process in wait_for_replicas (the fixture already checks it)."""

    def poll(self):
        return None
