"""WebSocket /v1/realtime: OpenAI's Realtime transcription sessions (server/realtime/)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from server.realtime.session import RealtimeService

router = APIRouter()


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket, intent: str | None = None, model: str | None = None):
    """API keys were checked at the upgrade (server/auth.py). `intent=transcription` is what the SDKs
    send for a transcription session; with no intent, the session is a transcription session too."""
    service: RealtimeService = websocket.app.state.realtime
    if intent not in (None, "transcription"):
        await websocket.accept()
        await websocket.send_json({"type": "error", "event_id": "event_intent", "error": {
            "type": "invalid_request_error", "code": "invalid_value", "param": "intent", "event_id": None,
            "message": f"Only transcription sessions are served here: connect with ?intent=transcription (got {intent[:50]!r}).",
        }})
        await websocket.close(code=1008)
        return
    await service.serve(websocket, model)
