"""POST /v1/audio/transcriptions and /v1/audio/translations."""

from __future__ import annotations

from fastapi import APIRouter, Request

from server.transcription import TranscriptionService

router = APIRouter()


def _service(request: Request) -> TranscriptionService:
    return request.app.state.transcription


@router.post("/v1/audio/transcriptions")
async def transcriptions(request: Request):
    return await _service(request).handle(request, "transcribe")


@router.post("/v1/audio/translations")
async def translations(request: Request):
    return await _service(request).handle(request, "translate")
