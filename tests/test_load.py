"""A bounded load test on loopback: a fixed number of concurrent requests that ends by itself.

Every request must be answered: no 5xx, no dropped connection, and every 200 must carry the right
transcript in the format asked for. The session server admits 2 requests per model and queues 16,
and all 8 go to one engine, so a 429 cannot happen here: every request must succeed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import openai

from tests.helpers import DATA, parse_srt, references, wer
from tests.test_operations import scrape, value

REQUESTS = 8
CONCURRENCY = 8
CLIPS = ["jfk.wav", "librivox_0870.wav", "p001.mp3"]


def one(i: int, url: str) -> tuple[int, str, str]:
    """Request i: (status, clip, transcript text or error body)."""
    clip = CLIPS[i % len(CLIPS)]
    path = DATA / clip
    kind = i % 4
    try:
        if kind == 0:  # official SDK, json
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=600)
            with open(path, "rb") as fh:
                return 200, clip, client.audio.transcriptions.create(file=fh, model="whisper-1").text
        if kind == 1:  # SDK, streamed
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=600)
            with open(path, "rb") as fh:
                events = list(client.audio.transcriptions.create(file=fh, model="gpt-4o-mini-transcribe", stream=True))
            assert events[-1].type == "transcript.text.done", events[-1]
            return 200, clip, events[-1].text
        fmt = "verbose_json" if kind == 2 else "srt"
        with open(path, "rb") as fh:
            r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": fh},
                           data={"model": "gpt-4o-transcribe", "response_format": fmt}, timeout=600)
        if r.status_code != 200:
            return r.status_code, clip, r.text
        if fmt == "srt":
            return 200, clip, " ".join(cue["text"] for cue in parse_srt(r.text))
        return 200, clip, r.json()["text"]
    except openai.RateLimitError as exc:
        return 429, clip, str(exc)
    except openai.APIStatusError as exc:
        return exc.status_code, clip, str(exc)


def test_concurrent_requests_all_answered_correctly(server_url, http):
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(lambda i: one(i, server_url), range(REQUESTS)))
    assert [s for s, _, _ in results] == [200] * REQUESTS, results
    pools = http.get("/ready").json()["pools"]
    assert REQUESTS <= pools["base"]["max_concurrency"] + pools["base"]["max_queue"]  # why no 429 is possible
    refs = references()
    for _, clip, text in results:
        assert wer(refs[clip], text) <= 0.25, (clip, text)
    after = scrape(http)
    for model in ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"):
        assert value(after, "oyez_queue_depth", model=model) == 0
        assert value(after, "oyez_decodes_running", model=model) == 0
    assert value(after, "oyez_requests_in_progress") == 1  # only the scrape
