"""Unit: nested settings, their flat aliases, and the generated configuration reference."""

from __future__ import annotations

import pytest

from server.settings import FLAT_ALIASES, Settings, configuration_doc
from tests.helpers import ROOT


def test_configuration_doc_is_current():
    assert (ROOT / "docs" / "configuration.md").read_text() == configuration_doc(), (
        "docs/configuration.md is stale: run `python -m server.settings > docs/configuration.md`"
    )


def test_nested_variables_and_group_json(monkeypatch):
    monkeypatch.setenv("OYEZ_WHISPER__BEAM_SIZE", "2")
    monkeypatch.setenv("OYEZ_LIMITS__MAX_UPLOAD_MB", "7.5")
    monkeypatch.setenv("OYEZ_SCHEDULER", '{"max_queue": 3}')
    s = Settings()
    assert s.whisper.beam_size == 2 and s.limits.max_upload_bytes == int(7.5 * 2**20) and s.scheduler.max_queue == 3
    assert s.whisper.device == "auto" and s.diarization.clustering_threshold == 0.7  # the rest keep their defaults


@pytest.mark.parametrize("variable", sorted(FLAT_ALIASES))
def test_every_documented_flat_name_still_works(monkeypatch, variable):
    group, field = FLAT_ALIASES[variable]
    default = getattr(getattr(Settings(), group), field)
    choices = {"clustering": ("agglomerative", "agglomerative")}  # fields with a fixed set of values
    value, expected = choices.get(field) or {bool: ("false", False) if default else ("true", True), int: ("3", 3), float: ("0.25", 0.25)}.get(
        type(default), ("/some/where", "/some/where"))
    monkeypatch.setenv(variable, value)
    got = getattr(getattr(Settings(), group), field)
    assert str(got) == str(expected)
    assert got != default


def test_the_nested_name_wins_over_the_flat_one(monkeypatch):
    monkeypatch.setenv("OYEZ_BEAM_SIZE", "3")
    monkeypatch.setenv("OYEZ_WHISPER__BEAM_SIZE", "1")
    assert Settings().whisper.beam_size == 1
    assert Settings(whisper={"beam_size": 4}).whisper.beam_size == 4  # arguments win over both


def test_models_and_preload_stay_flat_json(monkeypatch):
    monkeypatch.setenv("OYEZ_MODELS", '{"whisper-1": "/models/large-v3"}')
    monkeypatch.setenv("OYEZ_PRELOAD", '["whisper-1", "gpt-4o-transcribe-diarize"]')
    s = Settings()
    assert s.models == {"whisper-1": "/models/large-v3"} and s.preload == ["whisper-1", "gpt-4o-transcribe-diarize"]
