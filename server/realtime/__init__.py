"""OpenAI Realtime transcription sessions over WebSocket (GET /v1/realtime?intent=transcription)."""
