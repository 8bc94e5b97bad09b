"""Unit: bundled weights are joined safely; the registry never turns a request's name into a path."""

from __future__ import annotations

import threading

import pytest

from engines.bundled import join_split_model
from engines.errors import ModelNotFoundError, ModelUnavailableError
from engines.config import DiarizerConfig, WhisperConfig
from engines.registry import ModelRegistry
from server.catalogue import PUBLIC_MODELS, model_specs


def make_parts(tmp_path, sizes=(1000, 777)):
    parts = []
    for i, size in enumerate(sizes):
        p = tmp_path / f"model.bin.part{i + 1}"
        p.write_bytes(bytes([i + 1]) * size)
        parts.append(p)
    side = tmp_path / "config.json"
    side.write_text("{}")
    return parts, [side]


def test_join_concatenates_in_order_and_is_idempotent(tmp_path):
    parts, side = make_parts(tmp_path)
    target = join_split_model(parts, side, tmp_path / "out", expected_size=1777)
    data = (target / "model.bin").read_bytes()
    assert data == b"\x01" * 1000 + b"\x02" * 777
    assert (target / "config.json").read_text() == "{}"
    mtime = (target / "model.bin").stat().st_mtime_ns
    join_split_model(parts, side, tmp_path / "out", expected_size=1777)
    assert (target / "model.bin").stat().st_mtime_ns == mtime  # not written again
    assert sorted(p.name for p in target.iterdir()) == [".join.lock", "config.json", "model.bin"]


def test_join_with_wrong_size_leaves_nothing_half_written(tmp_path):
    parts, side = make_parts(tmp_path)
    with pytest.raises(ModelUnavailableError):
        join_split_model(parts, side, tmp_path / "out", expected_size=5000)
    assert not (tmp_path / "out" / "model.bin").exists()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_concurrent_first_starts_agree(tmp_path):
    parts, side = make_parts(tmp_path, sizes=(3_000_000, 2_000_000))
    errors = []

    def join():
        try:
            target = join_split_model(parts, side, tmp_path / "out", expected_size=5_000_000)
            assert (target / "model.bin").stat().st_size == 5_000_000
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=join) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_registry_names_and_sources(tmp_path):
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    reg = ModelRegistry(
        model_specs("base", {"mine": str(empty_dir), "hub": "Systran/faster-whisper-small"}),
        whisper=WhisperConfig(cache_dir=tmp_path),
        diarization=DiarizerConfig(pipeline="pyannote/speaker-diarization-community-1"),
    )
    assert set(PUBLIC_MODELS) | {"gpt-4o-transcribe-diarize", "mine", "hub"} == set(reg.ids())
    for name in ["../etc", "/tmp", str(empty_dir), "base", "Systran/faster-whisper-small"]:
        with pytest.raises(ModelNotFoundError):
            reg.spec(name)
    with pytest.raises(ModelUnavailableError, match="model.bin"):
        reg.engine("mine")
    with pytest.raises(ModelUnavailableError, match="downloads are disabled"):
        reg.engine("hub")
    # A Hub pipeline is never fetched unless downloads are allowed (and without the extra: "not installed").
    with pytest.raises(ModelUnavailableError, match="downloads are disabled|not installed"):
        reg.engine("gpt-4o-transcribe-diarize")
    assert not reg.is_loaded("gpt-4o-transcribe-diarize")


def test_prepare_command_joins_bundled_weights(tmp_path):
    """`oyez prepare` is what the Dockerfile runs at build time so containers start offline."""
    import os
    import subprocess
    import sys

    from engines.bundled import BASE_MODEL_BIN_SIZE
    from tests.helpers import ROOT

    env = {**os.environ, "OYEZ_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "server", "prepare", "--model", "whisper-1"], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"whisper-1: {tmp_path / 'whisper-base'}"
    assert (tmp_path / "whisper-base" / "model.bin").stat().st_size == BASE_MODEL_BIN_SIZE
