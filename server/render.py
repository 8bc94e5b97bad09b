"""Render engine transcripts in OpenAI's response formats: json, text, srt, vtt, verbose_json, diarized_json."""

from __future__ import annotations

import math

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from engines.languages import language_name
from engines.types import Segment, TokenLogprob, Transcript
from server.catalogue import Capabilities

# One audio token per 20 ms of audio fed to the encoder: Whisper's encoder emits one
# position per 20 ms (1,500 for a 30 s window). Silence that VAD removed is not counted.
AUDIO_TOKENS_PER_SECOND = 50


def duration_usage(transcript: Transcript) -> dict:
    return {"type": "duration", "seconds": math.ceil(round(transcript.audio.duration, 3))}


def token_usage(transcript: Transcript) -> dict:
    audio_tokens = math.ceil(transcript.audio.speech_duration * AUDIO_TOKENS_PER_SECOND)
    text_tokens = transcript.prompt_tokens
    output = transcript.output_tokens
    return {
        "type": "tokens",
        "input_tokens": audio_tokens + text_tokens,
        "input_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
        "output_tokens": output,
        "total_tokens": audio_tokens + text_tokens + output,
    }


def usage_for(capabilities: Capabilities, transcript: Transcript) -> dict:
    return token_usage(transcript) if capabilities.billing == "tokens" else duration_usage(transcript)


def logprobs_json(logprobs: list[TokenLogprob]) -> list[dict]:
    return [{"token": lp.token, "logprob": lp.logprob, "bytes": lp.bytes} for lp in logprobs]


def render(
    transcript: Transcript,
    *,
    capabilities: Capabilities,
    response_format: str,
    granularities: frozenset[str] = frozenset({"segment"}),
    include_logprobs: bool = False,
) -> Response:
    """The response in `response_format`. Speaker names appear only where OpenAI documents them
    (diarized_json) and as an extension in srt and vtt; json and text carry the plain transcript."""
    if response_format == "text":
        return PlainTextResponse(transcript.text + "\n")
    if response_format == "srt":
        return PlainTextResponse(to_srt(transcript.segments), media_type="application/x-subrip")
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(transcript.segments), media_type="text/vtt")
    if response_format == "verbose_json":
        return JSONResponse(verbose_json(transcript, granularities, include_logprobs))
    if response_format == "diarized_json":
        return JSONResponse(diarized_json(transcript))
    body: dict = {"text": transcript.text}
    if include_logprobs:
        body["logprobs"] = logprobs_json(transcript.logprobs)
    body["usage"] = usage_for(capabilities, transcript)
    return JSONResponse(body)


def speaker_text(segments: list[Segment]) -> str:
    """The diarized transcript's text: one `Speaker: text` line per segment."""
    return "\n".join(f"{s.speaker}: {s.text.strip()}" for s in segments if s.text.strip())


def segment_id(index: int) -> str:
    """Diarized segment ids, `seg_001` onwards (shared with the streamed events)."""
    return f"seg_{index + 1:03d}"


def diarized_segment_json(segment: Segment, index: int) -> dict:
    """One speaker segment: an item of diarized_json's `segments`, and the streamed segment event."""
    return {
        "type": "transcript.text.segment",
        "id": segment_id(index),
        "start": round(segment.start, 3),
        "end": round(segment.end, 3),
        "text": segment.text.strip(),
        "speaker": segment.speaker,
    }


def diarized_json(transcript: Transcript) -> dict:
    segments = [s for s in transcript.segments if s.text.strip()]
    return {
        "task": "transcribe",
        "duration": round(transcript.audio.duration, 3),
        "text": speaker_text(segments),
        "segments": [diarized_segment_json(s, i) for i, s in enumerate(segments)],
        "usage": duration_usage(transcript),
    }


def verbose_json(transcript: Transcript, granularities: frozenset[str], include_logprobs: bool) -> dict:
    body: dict = {
        "task": transcript.task,
        "language": "english" if transcript.task == "translate" else language_name(transcript.language),
        "duration": round(transcript.audio.duration, 3),
        "text": transcript.text,
    }
    if "segment" in granularities:
        body["segments"] = [_segment_json(s) for s in transcript.segments]
    if "word" in granularities:
        body["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in transcript.words]
    if include_logprobs:
        body["logprobs"] = logprobs_json(transcript.logprobs)
    body["usage"] = duration_usage(transcript)
    return body


def _segment_json(s: Segment) -> dict:
    return {
        "id": s.id,
        "seek": s.seek,
        "start": s.start,
        "end": s.end,
        "text": s.text,
        "tokens": s.tokens,
        "temperature": s.temperature,
        "avg_logprob": s.avg_logprob,
        "compression_ratio": s.compression_ratio,
        "no_speech_prob": s.no_speech_prob,
    }


def to_srt(segments: list[Segment]) -> str:
    """SubRip; diarized segments are prefixed `Speaker: `."""
    blocks = []
    for i, s in enumerate(segments, start=1):
        text = f"{s.speaker}: {s.text.strip()}" if s.speaker is not None else s.text.strip()
        blocks.append(f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{text}\n")
    return "\n".join(blocks) + ("\n" if blocks else "")


def to_vtt(segments: list[Segment]) -> str:
    """WebVTT; diarized segments carry a voice span, `<v Speaker>text`."""
    blocks = ["WEBVTT\n"]
    for s in segments:
        text = f"<v {_vtt_escape(s.speaker)}>{_vtt_escape(s.text.strip())}" if s.speaker is not None else s.text.strip()
        blocks.append(f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{text}\n")
    return "\n".join(blocks) + "\n"


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _timestamp(seconds: float, separator: str) -> str:
    ms = max(0, int(round(seconds * 1000)))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"
