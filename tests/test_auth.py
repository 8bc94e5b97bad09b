"""API keys: unit checks of parsing and comparison, and end to end against a server started with keys."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from server.auth import KeyChecker, bearer_token, load_keys
from tests.conftest import start_server, stop_server
from tests.helpers import DATA, references, wer
from tests.test_api_errors import assert_envelope

JFK = DATA / "jfk.wav"
KEY_A = "sk-oyez-alpha-7f3c9e"
KEY_FILE_KEY = "sk-oyez-from-file-2b81d0"


def test_keys_parse_from_commas_json_and_file(tmp_path):
    assert load_keys(" a, b ,,c ") == ["a", "b", "c"]
    assert load_keys('["x", "y"]') == ["x", "y"]
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team A\nk1\n\n  k2  # ops\n")
    assert load_keys("", keys_file) == ["k1", "k2"]
    assert load_keys("") == []
    with pytest.raises(ValueError):
        load_keys('["unterminated"')
    with pytest.raises(ValueError):
        load_keys("has space")


def test_checker_accepts_only_configured_keys():
    checker = KeyChecker(["sk-1", "sk-22"])
    assert checker.enabled
    assert checker.accepts("sk-1") and checker.accepts("sk-22")
    for wrong in [None, "", "sk-2", "sk-11", "sk-1 ", "SK-1", "sk-22x", "\udcff"]:
        assert not checker.accepts(wrong), wrong
    assert not KeyChecker([]).enabled


def test_bearer_token_parsing():
    assert bearer_token([(b"authorization", b"Bearer sk-1")]) == "sk-1"
    assert bearer_token([(b"Authorization", b"bearer   sk-1 ")]) == "sk-1"
    assert bearer_token([(b"authorization", b"Basic dXNlcjpwYXNz")]) is None
    assert bearer_token([(b"authorization", b"Bearer ")]) is None
    assert bearer_token([]) is None


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """A server that requires keys (one from the variable, one from a file) and logs JSON (tiny.en: fast)."""
    tmp = tmp_path_factory.mktemp("keyed")
    (tmp / "keys.txt").write_text(f"# operators\n{KEY_FILE_KEY}\n")
    log = tmp / "server.log"
    proc, url = start_server(
        {"OYEZ_API_KEYS": f"{KEY_A},sk-oyez-other", "OYEZ_API_KEYS_FILE": str(tmp / "keys.txt"),
         "OYEZ_LOG_FORMAT": "json", "OYEZ_PRELOAD": '["whisper-1"]', "OYEZ_DEFAULT_WEIGHTS": "tiny.en"},
        log,
    )
    yield url, log
    stop_server(proc)


def sdk(url: str, key: str):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=300)


def test_right_keys_transcribe(keyed):
    url, _ = keyed
    for key in (KEY_A, KEY_FILE_KEY):
        with open(JFK, "rb") as fh:
            text = sdk(url, key).audio.transcriptions.create(file=fh, model="whisper-1").text
        assert wer(references()["jfk.wav"], text) <= 0.10, text
    assert [m.id for m in sdk(url, KEY_A).models.list()][0] == "whisper-1"


def test_wrong_or_missing_key_is_401_invalid_api_key(keyed):
    url, _ = keyed
    with pytest.raises(openai.AuthenticationError) as info:
        with open(JFK, "rb") as fh:
            sdk(url, "sk-oyez-wrong").audio.transcriptions.create(file=fh, model="whisper-1")
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        sdk(url, KEY_A[:-1]).models.list()  # a prefix of a real key is not a key
    with httpx.Client(base_url=url, timeout=60) as http:
        for headers in ({}, {"Authorization": "Basic " + KEY_A}, {"Authorization": "Bearer"},
                        {"Authorization": f"Bearer {KEY_A}x"}):
            with open(JFK, "rb") as fh:
                r = http.post("/v1/audio/transcriptions", files={"file": fh}, data={"model": "whisper-1"}, headers=headers)
            assert_envelope(r, 401, code="invalid_api_key")
            assert KEY_A not in r.text
        assert_envelope(http.get("/v1/models"), 401, code="invalid_api_key")
        assert_envelope(http.get("/v1/models/whisper-1"), 401, code="invalid_api_key")
        assert_envelope(http.post("/v1/audio/translations", data={"model": "whisper-1"}), 401, code="invalid_api_key")


def test_probes_and_metrics_need_no_key(keyed):
    url, _ = keyed
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{url}/ready").json()["status"] == "ready"
    assert "oyez_requests_total" in httpx.get(f"{url}/metrics").text


def test_keys_never_reach_the_log_and_start_up_says_keys_are_on(keyed):
    url, log = keyed
    with httpx.Client(base_url=url, timeout=60) as http:
        http.get("/v1/models", headers={"Authorization": f"Bearer {KEY_A}"})
        http.get("/v1/models", headers={"Authorization": "Bearer sk-oyez-attacker-guess", "X-Request-Id": "probe-1"})
    deadline = time.monotonic() + 10  # the request's line is written just after its response
    while '"probe-1"' not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    text = log.read_text()
    assert '"probe-1"' in text
    for secret in (KEY_A, KEY_FILE_KEY, "sk-oyez-other", "sk-oyez-attacker-guess"):
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any("3 configured" in line["message"] for line in lines if line["logger"] == "oyez.auth")
    assert not any("NO API KEYS" in line["message"] for line in lines)


def test_server_without_keys_warns_loudly(server):
    assert "NO API KEYS CONFIGURED" in server.log_text()
