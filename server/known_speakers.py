"""`known_speaker_names[]` + `known_speaker_references[]`: OpenAI's data-URL voice references, checked and decoded.

Every rule answers a 400 naming the field at fault: the counts must match, at most
four pairs (a setting), each name non-empty, unique and short, each reference a
base64 `data:` URL of audio that decodes and lasts 2 to 10 seconds.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re

from engines.audio import decode_audio
from engines.errors import EngineError
from engines.types import KnownSpeaker
from server.errors import invalid

NAMES = "known_speaker_names"
REFERENCES = "known_speaker_references"
MIN_SECONDS = 2.0
MAX_SECONDS = 10.0
MAX_NAME_LENGTH = 64
_DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<data>.*)$", re.DOTALL)
# Audio arrives as audio/*, or in a video container (mp4, webm), or untyped.
_ACCEPTED_TYPES = ("audio/", "video/", "application/octet-stream")


def check_counts(names: list[str], references: list[str], max_count: int, max_bytes: int | None = None) -> None:
    """The cheap checks, done before any decoding: counts, names, and each reference's size."""
    for param, values in ((NAMES, names), (REFERENCES, references)):
        if len(values) > max_count:
            raise invalid(param, f"At most {max_count} known speakers are supported; got {len(values)} `{param}`.")
    if len(names) != len(references):
        raise invalid(
            REFERENCES,
            f"`{REFERENCES}` must have one entry per `{NAMES}` entry; got {len(references)} references "
            f"for {len(names)} names.",
        )
    if max_bytes is not None:
        for i, ref in enumerate(references):
            # base64 is 4 characters per 3 bytes: refuse by length before decoding anything.
            if len(ref) > 4 * math.ceil(max_bytes / 3) + 256:
                raise invalid(REFERENCES, f"`{REFERENCES}[{i}]` is larger than the limit of {max_bytes / 2**20:g} MB.")
    seen: set[str] = set()
    for name in names:
        if not name:
            raise invalid(NAMES, f"`{NAMES}` entries must not be empty.")
        if len(name) > MAX_NAME_LENGTH:
            raise invalid(NAMES, f"`{NAMES}` entries must be at most {MAX_NAME_LENGTH} characters.")
        if name in seen:
            raise invalid(NAMES, f"`{NAMES}` entries must be unique; {name!r} appears twice.")
        seen.add(name)


def decode_references(names: list[str], references: list[str]) -> tuple[KnownSpeaker, ...]:
    """Decode each reference to 16 kHz mono audio and check its length (blocking: call in a thread)."""
    speakers = []
    for i, (name, url) in enumerate(zip(names, references)):
        raw = _data_url_bytes(url, i)
        try:
            audio = decode_audio(io.BytesIO(raw), max_seconds=MAX_SECONDS + 1.0, param=REFERENCES)
        except EngineError as exc:
            raise invalid(REFERENCES, f"`{REFERENCES}[{i}]` ({name}) is not audio that can be decoded: {exc}") from None
        if not MIN_SECONDS <= round(audio.duration, 2) <= MAX_SECONDS:
            raise invalid(
                REFERENCES,
                f"`{REFERENCES}[{i}]` ({name}) lasts {audio.duration:.2f} s; "
                f"each reference must be between {MIN_SECONDS:g} and {MAX_SECONDS:g} seconds.",
            )
        speakers.append(KnownSpeaker(name=name, samples=audio.samples))
    return tuple(speakers)


def _data_url_bytes(url: str, index: int) -> bytes:
    match = _DATA_URL.match(url.strip())
    if match is None:
        raise invalid(REFERENCES, f"`{REFERENCES}[{index}]` must be a data URL such as `data:audio/wav;base64,...`.")
    mime = match["mime"].strip().lower()
    if mime and not mime.startswith(_ACCEPTED_TYPES):
        raise invalid(REFERENCES, f"`{REFERENCES}[{index}]` has media type {mime!r}; an audio type is expected.")
    if ";base64" not in match["params"].lower():
        raise invalid(REFERENCES, f"`{REFERENCES}[{index}]` must be base64-encoded (`;base64,`).")
    try:
        raw = base64.b64decode(re.sub(r"\s+", "", match["data"]), validate=True)
    except (binascii.Error, ValueError):
        raise invalid(REFERENCES, f"`{REFERENCES}[{index}]` is not valid base64.") from None
    if not raw:
        raise invalid(REFERENCES, f"`{REFERENCES}[{index}]` is empty.")
    return raw
