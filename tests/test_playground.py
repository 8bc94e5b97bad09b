"""The browser playground (`/`), driven in headless Chromium through Playwright against the real server.

Chromium is Debian's (`/usr/bin/chromium`, or OYEZ_CHROMIUM); scripts/test installs it when missing.
Its fake microphone plays tests/data/jfk.wav. Set OYEZ_PLAYGROUND_SCREENSHOTS=DIR to save the
screenshots the docs use.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (the `test` extra)")

from tests.conftest import start_server, stop_server  # noqa: E402
from tests.helpers import DATA, read_wav, references, shared, wav_bytes, wer  # noqa: E402

CHROMIUM = Path(os.environ.get("OYEZ_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = os.environ.get("OYEZ_PLAYGROUND_SCREENSHOTS")
DIARIZE = "gpt-4o-transcribe-diarize"
JFK = references()["jfk.wav"]
TIMEOUT_MS = 240_000  # a busy 2-core machine decoding a diarized file


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}: install Debian's `chromium` (scripts/test does, as root)")
    # The fake microphone: JFK's 11 s with a little silence around it, played once.
    mic = tmp_path_factory.mktemp("mic") / "mic.wav"
    speech = read_wav(DATA / "jfk.wav")
    mic.write_bytes(wav_bytes(np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(32000, np.float32)])))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={mic}%noloop",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        yield browser
        browser.close()


class Page:
    """A fresh browser context on one server, recording console errors and any request leaving it."""

    def __init__(self, browser, base: str, viewport=(1280, 800)):
        self.base = base
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, accept_downloads=True)
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def _route(self, route):
        url = route.request.url
        if url.startswith(self.base + "/") or url == self.base or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def open(self, path: str = "/"):
        return self.page.goto(self.base + path)

    def testid(self, name: str):
        return self.page.get_by_test_id(name)

    def close(self):
        self.context.close()


@pytest.fixture
def ui(browser, server_url):
    page = Page(browser, server_url)
    yield page
    page.close()


def wait_models(ui):
    ui.page.wait_for_function(
        "ids => ids.every(id => [...document.querySelectorAll('[data-testid=model-select] option')].some(o => o.value === id))",
        arg=["whisper-1", DIARIZE],
    )


def transcribe(ui, path: Path, model: str):
    ui.testid("file-input").set_input_files(str(path))
    ui.testid("model-select").select_option(model)
    ui.testid("transcribe").click()
    ui.page.wait_for_selector("#status:has-text('Done')", timeout=TIMEOUT_MS)
    assert ui.testid("error").is_hidden(), ui.testid("error").inner_text()


def segments(ui) -> list[dict]:
    return ui.testid("segment").evaluate_all(
        "els => els.map(e => ({start: +e.dataset.start, end: +e.dataset.end, speaker: e.dataset.speaker ?? null,"
        " text: e.querySelector('.text').textContent, colour: getComputedStyle(e).borderLeftColor}))"
    )


def screenshot(ui, name: str, section: str):
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        ui.page.locator(f"section[aria-labelledby={section}]").screenshot(path=str(Path(SCREENSHOTS) / name))


def test_page_loads_with_no_error_and_no_outside_request(ui):
    ui.open("/")
    page = ui.page
    wait_models(ui)
    assert ui.testid("error").is_hidden()
    ids = ui.testid("model-select").locator("option").evaluate_all("os => os.map(o => o.value)")
    assert "whisper-1" in ids and DIARIZE in ids
    # Every form control has a label, and the keyboard reaches the Transcribe button.
    unlabelled = page.locator("input, select").evaluate_all("els => els.filter(e => !e.labels.length).map(e => e.id)")
    assert unlabelled == []
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.testid") == "transcribe":
            break
    else:
        pytest.fail("the Transcribe button is not reachable with Tab")
    # Phone width: nothing wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    # Everything the page loaded (its files and the model list) is small.
    loaded = page.evaluate("performance.getEntriesByType('resource').reduce((n, e) => n + e.decodedBodySize, 0)")
    assert 0 < loaded + len(page.content()) < 300_000
    # /playground is the same page, with a policy that forbids any other origin.
    response = ui.open("/playground")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    wait_models(ui)
    assert ui.errors == [] and ui.outside == []


def test_playground_files_are_served_and_others_are_not(http):
    for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css"), ("pcm-worklet.js", "text/javascript")]:
        r = http.get(f"/playground/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind) and r.content
    for bad in ["/playground/__init__.py", "/playground/..%2F..%2Fapp.py", "/playground/nothing.js"]:
        r = http.get(bad)
        assert r.status_code == 404 and "error" in r.json(), bad


def test_a_file_is_transcribed_with_streamed_text_and_timed_segments(ui):
    ui.open("/")
    wait_models(ui)
    transcribe(ui, DATA / "jfk.wav", "whisper-1")
    text = ui.testid("transcript").inner_text()
    assert wer(JFK, text) < 0.15, text
    segs = segments(ui)
    assert segs and all(s["speaker"] is None for s in segs)
    last = 0.0
    for s in segs:
        assert last - 1e-6 <= s["start"] <= s["end"] <= 11.1, segs
        last = s["start"]
    assert wer(JFK, " ".join(s["text"] for s in segs)) < 0.15
    # The downloads hold the same result.
    ui.page.select_option("#format", "srt")
    with ui.page.expect_download() as info:
        ui.page.click("#download")
    srt = Path(info.value.path()).read_text()
    assert srt.startswith("1\n00:00:0") and " --> " in srt and "country" in srt
    ui.page.select_option("#format", "verbose_json")
    with ui.page.expect_download() as info:
        ui.page.click("#download")
    verbose = json.loads(Path(info.value.path()).read_text())
    assert verbose["task"] == "transcribe" and len(verbose["segments"]) == len(segs)
    # Selecting a segment seeks the player there and highlights it.
    ui.testid("segment").last.locator("button").click()
    ui.page.wait_for_selector("[data-testid=segment].playing")
    assert ui.errors == [] and ui.outside == []


def test_the_diarize_model_shows_two_speakers(ui):
    ui.open("/")
    wait_models(ui)
    transcribe(ui, DATA / "diarization" / "sample.wav", DIARIZE)
    segs = segments(ui)
    speakers = {s["speaker"] for s in segs}
    assert None not in speakers and len(speakers) >= 2, segs
    # One colour per speaker.
    colours = {s["speaker"]: s["colour"] for s in segs}
    assert len(set(colours.values())) == len(colours)
    assert all(s["start"] <= s["end"] <= 30.0 for s in segs)
    assert ui.errors == [] and ui.outside == []


def test_a_known_speaker_gets_her_name(ui):
    base = shared("diarization/constructed")
    ui.open("/")
    wait_models(ui)
    ui.testid("model-select").select_option(DIARIZE)
    ui.testid("speaker-name").fill("sonja")
    ui.testid("speaker-file").set_input_files(str(base / "refs" / "LS1998_ref1.flac"))
    ui.testid("speaker-add").click()
    ui.page.wait_for_selector("#speaker-list li:has-text('sonja')")
    transcribe(ui, base / "mix_2spk_mf.wav", DIARIZE)
    segs = segments(ui)
    speakers = {s["speaker"] for s in segs}
    assert "sonja" in speakers and len(speakers) >= 2, segs
    assert "sonja" in ui.testid("transcript").inner_text()
    # Her name is on her turns (the mix's RTTM is exact).
    turns = [line.split() for line in (base / "mix_2spk_mf.rttm").read_text().splitlines()]
    hers = [(float(t[3]), float(t[3]) + float(t[4])) for t in turns if t[7] == "LS1998"]
    for s in segs:
        if s["speaker"] == "sonja":
            mid = (s["start"] + s["end"]) / 2
            assert any(a - 0.5 <= mid <= b + 0.5 for a, b in hers), s
    screenshot(ui, "playground-speakers.png", "file-heading")
    assert ui.errors == [] and ui.outside == []


def test_a_known_speaker_recorded_from_the_microphone(ui):
    """The clip recorded in the page (24 kHz PCM16 from the AudioWorklet, as WAV) names its voice."""
    ui.open("/")
    wait_models(ui)
    ui.testid("model-select").select_option(DIARIZE)
    ui.page.click("#speaker-record")
    ui.page.wait_for_selector("#speaker-record:has-text('Recorded')", timeout=20_000)
    ui.testid("speaker-name").fill("jfk")
    ui.testid("speaker-add").click()
    listed = ui.page.inner_text("#speaker-list li")
    seconds = float(re.search(r"jfk \(([\d.]+) s\)", listed).group(1))
    assert 5.5 <= seconds <= 6.5, listed
    transcribe(ui, DATA / "jfk.wav", DIARIZE)
    segs = segments(ui)
    assert segs and {s["speaker"] for s in segs} == {"jfk"}, segs
    assert ui.errors == [] and ui.outside == []


def test_live_captions_from_the_microphone(ui):
    ui.open("/")
    wait_models(ui)
    ui.testid("live-model").select_option("whisper-1")
    ui.testid("live-start").click()
    ui.page.wait_for_selector("[data-testid=live-stop]:not([disabled])")
    ui.page.wait_for_timeout(13_500)  # the fake microphone plays 11 s of speech after 0.5 s of silence
    ui.testid("live-stop").click()
    ui.page.wait_for_selector("#live-status:has-text('Stopped')", timeout=TIMEOUT_MS)
    assert ui.testid("error").is_hidden(), ui.testid("error").inner_text()
    agreed = ui.page.inner_text("[data-testid=live-transcript] .agreed")
    assert wer(JFK, agreed) < 0.35, agreed
    screenshot(ui, "playground-live.png", "live-heading")
    # A browser without a realtime endpoint logs the failed WebSocket; nothing else may reach the console.
    assert [e for e in ui.errors if "WebSocket" not in e] == [] and ui.outside == []


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    """A second, small server: API keys required, uploads capped at 0.25 MB, nothing preloaded."""
    log = tmp_path_factory.mktemp("keyed") / "server.log"
    proc, url = start_server(
        {"OYEZ_API_KEYS": "sk-play-1", "OYEZ_MAX_UPLOAD_MB": "0.25", "OYEZ_PRELOAD": "[]"}, log
    )
    yield url
    stop_server(proc)


def test_401_and_413_show_the_servers_message(browser, keyed_server):
    ui = Page(browser, keyed_server)
    try:
        ui.open("/")
        page = ui.page
        error = ui.testid("error")
        page.wait_for_selector("[data-testid=error]:not([hidden])")
        assert "API key" in error.inner_text() and "You didn't provide an API key" in error.inner_text()
        page.fill("#api-key", "sk-wrong")
        page.click("#key-save")
        page.wait_for_selector("[data-testid=error]:has-text('Incorrect API key provided')")
        page.fill("#api-key", "sk-play-1")
        page.click("#key-save")
        wait_models(ui)
        assert error.is_hidden()
        # The key is kept in the browser: a reload needs no typing.
        page.reload()
        wait_models(ui)
        assert error.is_hidden()
        # jfk.wav is 0.34 MB: over the limit.
        ui.testid("file-input").set_input_files(str(DATA / "jfk.wav"))
        ui.testid("transcribe").click()
        page.wait_for_selector("[data-testid=error]:not([hidden])")
        assert re.search(r"too large; the limit is 0\.25 MB", error.inner_text()), error.inner_text()
        assert ui.outside == []
    finally:
        ui.close()
