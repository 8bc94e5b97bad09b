"""Request rules that depend on the model: what its row of the capability table allows.

Every refusal is a 400 naming the field at fault, in OpenAI's words where OpenAI documents one.
"""

from __future__ import annotations

from engines.types import TranscribeOptions, VadParams
from server.catalogue import Capabilities
from server.errors import invalid
from server.params import TranscriptionRequest


def check_request(req: TranscriptionRequest, model: Capabilities) -> None:
    """Refuse field combinations OpenAI refuses (or Oyez cannot honour) for this model."""
    if req.task == "translate" and not model.translation:
        raise invalid("model", f"The model `{req.model}` cannot be used for translations.")
    if req.response_format not in model.response_formats:
        if req.response_format == "diarized_json":
            raise invalid("response_format", "`diarized_json` is only available with the model `gpt-4o-transcribe-diarize`.")
        raise invalid(
            "response_format",
            f"`{req.response_format}` is not available with `{req.model}`; use one of {', '.join(model.response_formats)}.",
        )
    if req.granularities_given and req.response_format != "verbose_json":
        raise invalid(
            "timestamp_granularities",
            "`timestamp_granularities` is only supported with `response_format` `verbose_json`.",
        )
    if not model.diarized and (req.known_speaker_names or req.known_speaker_references):
        field = "known_speaker_names" if req.known_speaker_names else "known_speaker_references"
        raise invalid(field, f"`{field}` is only supported with the model `gpt-4o-transcribe-diarize`.")
    if req.speakers and not model.diarized:
        raise invalid("num_speakers", "`num_speakers`, `min_speakers` and `max_speakers` are only supported with the "
                      "model `gpt-4o-transcribe-diarize`.")
    if req.prompt is not None and not model.prompt:
        raise invalid("prompt", f"`prompt` is not supported with the model `{req.model}`.")
    if req.include_logprobs and not model.logprobs:
        raise invalid("include", f"`include[]=logprobs` is not supported with the model `{req.model}`.")
    if req.stream and not model.streaming:
        raise invalid("stream", f"Streaming is not supported with the model `{req.model}`.")
    if req.vad is False and req.chunking.kind != "default":
        raise invalid("vad", "`vad=false` contradicts `chunking_strategy`, which chunks the audio by voice activity.")


def transcribe_options(req: TranscriptionRequest, model: Capabilities, vad_by_default: bool) -> TranscribeOptions:
    """The engine's options for a checked request.

    Voice-activity detection: `chunking_strategy` chooses it and its knobs; without one, Oyez's
    `vad` field switches it, and without either the server default applies (OYEZ_VAD_BY_DEFAULT).
    The diarize model, which OpenAI documents as needing `chunking_strategy` past 30 s, takes
    `auto` when none is given (unless `vad=false`).
    """
    if req.chunking.kind != "default":
        vad = req.chunking.vad
    elif req.vad is not None:
        vad = VadParams() if req.vad else None
    else:
        vad = VadParams() if vad_by_default or model.diarized else None
    return TranscribeOptions(
        task=req.task,
        language=req.language,
        prompt=req.prompt,
        temperature=req.temperature,
        word_timestamps=req.response_format == "verbose_json" and "word" in req.granularities,
        token_logprobs=req.include_logprobs,
        vad=vad,
        early_first_segment=req.stream,  # a stream's first delta comes sooner
        num_speakers=req.speakers.num, min_speakers=req.speakers.min, max_speakers=req.speakers.max,
    )
