"""End to end: the README's examples work as written (the Python SDK block and every curl command),
run against the real server with only the address changed."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT, references, wer

README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README) if lang == language]


def section(title: str) -> str:
    start = README.index(title)
    return README[start:README.index("\n## ", start + 1)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A scratch directory that sees the repository's tests/data as the README's commands do."""
    path = tmp_path_factory.mktemp("readme")
    (path / "tests").symlink_to(ROOT / "tests")
    cut = next(b for b in blocks("bash") if "sheila.wav" in b and "wave.open" in b)
    subprocess.run(["bash", "-c", cut.replace(".venv/bin/python", sys.executable)], cwd=path, check=True)
    return path


def test_python_sdk_examples_run_as_written(server_url, workdir):
    code = next(b for b in blocks("python") if "from openai import OpenAI" in b)
    code = code.replace("http://127.0.0.1:8000", server_url)
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert wer(references()["jfk.wav"], lines[0]) < 0.1
    assert lines[1].startswith("english ") and "transcript.text.done" in out.stdout
    speakers = {line.split()[0] for line in lines if re.match(r"^\S+ \d+(\.\d+)? \d+(\.\d+)? ", line)}
    assert "Sheila" in speakers  # the known voice is named


def test_curl_examples_run_as_written(server_url, workdir):
    script = "\n".join(b for b in blocks("bash") if "curl " in b and "/v1/" in b)
    assert script.count("curl ") >= 12
    script = script.replace("http://127.0.0.1:8000", server_url).replace("curl ", "curl -sS --fail-with-body ")
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=workdir, capture_output=True, text=True,
                         timeout=900, env={"PATH": "/usr/bin:/bin", "OYEZ_KEY": "sk-any"})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "And so my fellow Americans" in out.stdout and "WEBVTT" in out.stdout and "<v A>" in out.stdout
    diarized = json.loads(out.stdout[out.stdout.rindex('{"task":"transcribe"'):].splitlines()[0])
    assert "Sheila" in {s["speaker"] for s in diarized["segments"]}  # the known speaker, through curl's <file


def test_live_caption_example_runs_as_written(server_url, workdir):
    code = next(b for b in blocks("python") if "client.realtime.connect" in b)
    code = code.replace("http://127.0.0.1:8000", server_url)
    out = subprocess.run([sys.executable, "-c", code, "tests/data/jfk.wav"], cwd=workdir, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert wer(references()["jfk.wav"], out.stdout) < 0.35
