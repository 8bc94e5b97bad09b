"""Unit: OpenAI's response formats from a transcript."""

from __future__ import annotations

import json

from engines.types import AudioInfo, Segment, TokenLogprob, Transcript, Word
from server.catalogue import capabilities_of
from server.render import render, to_srt, to_vtt, token_usage, duration_usage
from tests.helpers import parse_srt, parse_vtt


def seg(i, start, end, text, n=3):
    return Segment(id=i, seek=0, start=start, end=end, text=text, tokens=list(range(n)), temperature=0.0,
                   avg_logprob=-0.2, compression_ratio=1.1, no_speech_prob=0.01, text_token_count=n,
                   words=[Word(text.strip(), start, end, 0.9)],
                   logprobs=[TokenLogprob(t, -0.1, list(t.encode())) for t in [text]])


def transcript(duration=8.47, speech=8.0, prompt_tokens=0):
    return Transcript(language="en", language_probability=0.99, audio=AudioInfo(duration, speech),
                      prompt_tokens=prompt_tokens, task="transcribe",
                      segments=[seg(0, 0.0, 3.32, " The beach was popular."), seg(1, 3.32, 3725.5, " People swam.", 4)])


def test_duration_usage_rounds_up_like_openai():
    assert duration_usage(transcript(8.47)) == {"type": "duration", "seconds": 9}
    assert duration_usage(transcript(9.0)) == {"type": "duration", "seconds": 9}


def test_token_usage_counts():
    usage = token_usage(transcript(speech=8.0, prompt_tokens=5))
    assert usage == {"type": "tokens", "input_tokens": 405, "input_token_details": {"text_tokens": 5, "audio_tokens": 400},
                     "output_tokens": 7, "total_tokens": 412}


def test_srt_and_vtt_timestamps_past_an_hour():
    segments = transcript().segments
    srt = to_srt(segments)
    assert "00:00:03,320 --> 01:02:05,500" in srt
    assert [c["text"] for c in parse_srt(srt)] == ["The beach was popular.", "People swam."]
    vtt = to_vtt(segments)
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:03.320\n") and len(parse_vtt(vtt)) == 2


def test_empty_transcript_formats():
    empty = Transcript("en", 1.0, AudioInfo(4.0, 0.0), 0, "transcribe", [])
    assert to_srt([]) == "" and to_vtt([]) == "WEBVTT\n\n"
    assert json.loads(render(empty, capabilities=capabilities_of("whisper-1"), response_format="json").body) == {
        "text": "", "usage": {"type": "duration", "seconds": 4}}


def test_verbose_json_granularities():
    body = json.loads(render(transcript(), capabilities=capabilities_of("whisper-1"), response_format="verbose_json",
                             granularities=frozenset({"word"})).body)
    assert "segments" not in body and body["words"][0] == {"word": "The beach was popular.", "start": 0.0, "end": 3.32}
    assert body["language"] == "english" and body["task"] == "transcribe" and body["usage"]["seconds"] == 9
    body = json.loads(render(transcript(), capabilities=capabilities_of("whisper-1"), response_format="verbose_json").body)
    assert "words" not in body and set(body["segments"][0]) == {
        "id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob", "compression_ratio", "no_speech_prob"}


def test_json_with_logprobs_for_gpt4o():
    body = json.loads(render(transcript(), capabilities=capabilities_of("gpt-4o-transcribe"), response_format="json", include_logprobs=True).body)
    assert list(body) == ["text", "logprobs", "usage"] and body["usage"]["type"] == "tokens"
    assert body["logprobs"][0]["bytes"] == list(" The beach was popular.".encode())
