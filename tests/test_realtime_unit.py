"""Unit tests of the realtime pieces that need no server: G.711 and 24 kHz input, the streaming VAD
and turn detector, the local-agreement policy, and the protocol's validation of client events."""

from __future__ import annotations

import base64
import json
import warnings

import numpy as np
import pytest

from engines.live_audio import ALAW, G711_ALAW, G711_ULAW, PCM16_24K, ULAW, LiveAudioDecoder
from engines.local_agreement import LocalAgreement, Word, common_prefix, join, words_of
from engines.streaming_vad import FRAME, StreamingVad, TurnDetector, TurnParams
from engines.types import AudioInfo, Segment, TokenLogprob, Transcript
from server.realtime.protocol import ProtocolError, SessionConfig, apply_update, decode_audio_field, parse_event
from tests.helpers import DATA, read_wav


# -- G.711 and resampling --------------------------------------------------------------------

def test_g711_tables_match_the_reference_codec():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # the stdlib's G.711 (deprecated, gone in 3.13)
    codes = bytes(range(256))
    assert ULAW.tolist() == np.frombuffer(audioop.ulaw2lin(codes, 2), dtype="<i2").tolist()
    assert ALAW.tolist() == np.frombuffer(audioop.alaw2lin(codes, 2), dtype="<i2").tolist()


def test_g711_known_values():
    # µ-law 0xFF and A-law 0xD5 are the codes for silence; 0x00 / 0x2A the loudest negative samples.
    assert ULAW[0xFF] == 0 and ULAW[0x7F] == 0 and ULAW[0x00] == -32124 and ULAW[0x80] == 32124
    assert ALAW[0xD5] == 8 and ALAW[0x55] == -8 and ALAW[0x2A] == -32256 and ALAW[0xAA] == 32256


def _tone(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t) * 32767).astype("<i2")


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.parametrize("fmt", [PCM16_24K, G711_ULAW, G711_ALAW])
def test_live_decoder_resamples_to_16k_in_any_pieces(fmt):
    pcm = _tone(fmt.rate, 2.0)
    if fmt is PCM16_24K:
        raw = pcm.tobytes()
    else:  # encode by nearest table entry: exact enough for a tone
        table = ULAW if fmt is G711_ULAW else ALAW
        order = np.argsort(table)
        idx = np.clip(np.searchsorted(table[order], pcm), 0, 255)
        raw = order[idx].astype(np.uint8).tobytes()
    whole = LiveAudioDecoder(fmt).decode(raw)
    pieces = LiveAudioDecoder(fmt)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(len(raw), 40, replace=False))  # odd cuts too: half a PCM16 sample carries over
    parts = [pieces.decode(raw[a:b]) for a, b in zip([0, *cuts], [*cuts, len(raw)])]
    chunked = np.concatenate(parts)
    assert abs(len(whole) - 32000) <= 64 and len(chunked) == len(whole)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    assert abs(_peak_hz(whole[1000:-1000], 16000) - 440) < 5
    assert 0.45 < np.abs(whole[1000:-1000]).max() < 0.55


# -- streaming VAD and turns -----------------------------------------------------------------

def test_streaming_vad_equals_one_pass_over_the_file():
    from faster_whisper.vad import get_vad_model

    audio = read_wav(DATA / "jfk.wav")
    n = len(audio) // FRAME * FRAME
    reference = get_vad_model()(audio[:n]).reshape(-1)
    vad = StreamingVad()
    rng = np.random.default_rng(1)
    cuts = np.sort(rng.choice(n, 60, replace=False))
    probs = np.concatenate([vad(audio[a:b]) for a, b in zip([0, *cuts], [*cuts, n])])
    np.testing.assert_allclose(probs, reference, atol=1e-5)
    assert probs[:5].max() < 0.5 and probs.max() > 0.9  # silence first, then JFK speaking


def test_turn_detector_start_padding_hysteresis_and_stop():
    params = TurnParams(threshold=0.5, prefix_padding_ms=64, silence_duration_ms=96)  # 2 and 3 frames
    det = TurnDetector(params)
    probs = [0.1] * 10 + [0.9] * 5 + [0.4] * 4 + [0.9] + [0.1, 0.4, 0.2] + [0.1] * 5
    events = det.feed(np.array(probs))
    assert [(e.kind, e.sample) for e in events] == [
        ("start", (10 - 2) * FRAME),  # first speech frame, 64 ms early
        # 0.4 sits between neg (0.35) and threshold: in speech (frames 15-18) it goes on; once silence
        # has begun (frame 20) it does not end it, so the stop comes 3 frames after frame 20
        ("stop", (20 + 3) * FRAME),
    ]
    assert [(e.kind, e.sample) for e in det.feed(np.array([0.9]))] == [("start", (28 - 2) * FRAME)]
    # A turn right after a stop: its padding stops at the previous turn's end.
    quick = TurnDetector(params).feed(np.array([0.9, 0.1, 0.1, 0.1, 0.9]))
    assert [(e.kind, e.sample) for e in quick] == [("start", 0), ("stop", 4 * FRAME), ("start", 4 * FRAME)]
    det2 = TurnDetector(params)
    assert [e.kind for e in det2.feed(np.array([0.9]), floor=0)] == ["start"]
    assert det2.feed(np.array([0.9, 0.9])) == [] and det2.speaking


def test_turn_detector_tells_where_the_silence_began():
    """The early final decode (server/realtime/session.py) starts on `silence_from` and is kept only when
    the stop's `speech_end` is that same sample, i.e. no speech came back in between."""
    det = TurnDetector(TurnParams(threshold=0.5, prefix_padding_ms=0, silence_duration_ms=160))  # 5 frames
    assert det.feed(np.array([0.9] * 4))[0].kind == "start" and det.silence_from is None
    det.feed(np.array([0.1, 0.1]))
    assert det.silence_from == 4 * FRAME
    det.feed(np.array([0.9]))  # speech came back: the silence is over, a later one starts afresh
    assert det.silence_from is None
    det.feed(np.array([0.2, 0.4]))  # 0.4 does not end a silence once it began
    assert det.silence_from == 7 * FRAME
    stop = det.feed(np.array([0.1] * 3))
    assert [(e.kind, e.sample, e.speech_end) for e in stop] == [("stop", 12 * FRAME, 7 * FRAME)]
    assert det.silence_from is None and not det.speaking


def test_turn_detector_padding_never_reaches_before_the_floor():
    det = TurnDetector(TurnParams(prefix_padding_ms=300), position=FRAME * 100)
    events = det.feed(np.array([0.9]), floor=FRAME * 99)
    assert events[0].sample == FRAME * 99


# -- local agreement -------------------------------------------------------------------------

def W(text: str) -> list[Word]:
    return [Word(t) for t in text.split()]


def test_local_agreement_commits_what_two_decodes_agree_on():
    la = LocalAgreement()
    assert la.update(W("And so my fellow America")) == []
    assert join(la.update(W("And so my fellow Americans ask"))) == "And so my fellow"
    assert la.update(W("And so my fellow Americans, ask not")) == []  # "Americans" vs "Americans,"
    assert join(la.update(W("And so my fellow Americans, ask not what"))) == "Americans, ask not"
    assert la.update(W("And so my")) == []  # a hypothesis that drops committed words commits nothing
    rest = la.finish(W("And so my fellow Americans, ask not what your country can do for you."))
    assert join(rest) == "what your country can do for you."
    assert join(la.committed) == "And so my fellow Americans, ask not what your country can do for you."


def test_local_agreement_holds_back_the_last_agreed_words():
    la = LocalAgreement(hold=1)
    la.update(W("one two three four"))
    assert join(la.update(W("one two three four five"))) == "one two three"  # "four" waits for a third decode
    assert join(la.update(W("one two three four five six"))) == "four"
    assert la.update(W("one two")) == []


def test_local_agreement_finish_when_the_final_decode_disagrees():
    la = LocalAgreement()
    la.update(W("one two three four"))
    la.update(W("one two three five"))
    assert join(la.committed) == "one two three"
    # The final decode spells an earlier word differently: text resumes after the last committed words.
    assert join(la.finish(W("1 two three four five six"))) == "four five six"
    la2 = LocalAgreement(committed=W("alpha beta"))
    assert join(la2.finish(W("gamma delta epsilon"))) == "epsilon"  # nowhere to anchor: skip as many words
    assert common_prefix(W("a b c"), W("a b d")) == 2


def _lp(text: str) -> TokenLogprob:
    raw = text.encode()
    return TokenLogprob(token=text, logprob=-0.1, bytes=list(raw))


def _segment(text: str, tokens: list[str] | None) -> Segment:
    return Segment(id=0, seek=0, start=0, end=1, text=text, tokens=[], temperature=0, avg_logprob=0,
                   compression_ratio=1, no_speech_prob=0, logprobs=[_lp(t) for t in tokens or []])


def _transcript(*segments: Segment) -> Transcript:
    return Transcript(language="en", language_probability=1, audio=AudioInfo(1, 1), prompt_tokens=0,
                      task="transcribe", segments=list(segments))


def test_words_of_groups_token_logprobs_by_word():
    tr = _transcript(_segment(" Hello, wor ld.", [" Hello", ",", " wor", " ld", "."]), _segment(" Again", [" Again"]))
    words = words_of(tr)
    assert [w.text for w in words] == ["Hello,", "wor", "ld.", "Again"]
    assert [len(w.logprobs) for w in words] == [2, 1, 2, 1]
    plain = words_of(_transcript(_segment(" no logprobs here", None)))
    assert [w.text for w in plain] == ["no", "logprobs", "here"] and all(not w.logprobs for w in plain)
    assert join(words) == tr.text.replace("  ", " ")


# -- protocol --------------------------------------------------------------------------------

class _Models:
    def spec(self, name):
        kinds = {"whisper-1": "speech", "gpt-4o-transcribe": "speech", "gpt-4o-transcribe-diarize": "diarize"}
        if name not in kinds:
            raise KeyError(name)
        return type("Spec", (), {"kind": kinds[name]})()


def _update(session, config=None):
    return apply_update(config or SessionConfig(model="gpt-4o-transcribe"), session, _Models())


def test_session_update_applies_only_present_fields():
    cfg = _update({"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcmu"}, "transcription": {"model": "whisper-1", "language": "EN"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 800}}},
        "include": ["item.input_audio_transcription.logprobs"]})
    assert (cfg.format, cfg.model, cfg.language, cfg.include_logprobs) == ("audio/pcmu", "whisper-1", "en", True)
    assert cfg.turn_detection == TurnParams(silence_duration_ms=800)
    cfg2 = _update({"type": "transcription", "audio": {"input": {"turn_detection": None}}}, cfg)
    assert cfg2.turn_detection is None and cfg2.format == "audio/pcmu" and cfg2.model == "whisper-1"
    shown = cfg2.to_json("sess_x", 0)
    assert shown["audio"]["input"]["turn_detection"] is None and shown["include"] == [
        "item.input_audio_transcription.logprobs"]


@pytest.mark.parametrize("session,code,param", [
    ({"type": "realtime"}, "invalid_value", "session.type"),
    ({"audio": {}}, "missing_required_parameter", "session.type"),
    ({"type": "transcription", "bogus": 1}, "unknown_parameter", "session.bogus"),
    ({"type": "transcription", "audio": {"input": {"format": {"type": "audio/wav"}}}}, "invalid_value",
     "session.audio.input.format.type"),
    ({"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}, "invalid_value",
     "session.audio.input.format.rate"),
    ({"type": "transcription", "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2}}}},
     "invalid_value", "session.audio.input.turn_detection.threshold"),
    ({"type": "transcription", "audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}},
     "unsupported_value", "session.audio.input.turn_detection.type"),
    ({"type": "transcription", "audio": {"input": {"transcription": {"model": "nope"}}}}, "model_not_found",
     "session.audio.input.transcription.model"),
    ({"type": "transcription", "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe-diarize"}}}},
     "model_not_available", "session.audio.input.transcription.model"),
    ({"type": "transcription", "audio": {"input": {"transcription": {"language": "xx"}}}}, "invalid_value",
     "session.audio.input.transcription.language"),
])
def test_bad_session_updates(session, code, param):
    with pytest.raises(ProtocolError) as info:
        _update(session)
    assert (info.value.code, info.value.param) == (code, param), info.value.message


def test_parse_event_errors():
    for text, code in [("{not json", "invalid_json"), ("[1]", "invalid_json"), ('{"x": 1}', "missing_required_parameter"),
                       ('{"type": "response.create", "event_id": "e1"}', "invalid_value")]:
        with pytest.raises(ProtocolError) as info:
            parse_event(text)
        assert info.value.code == code
    assert info.value.event_id == "e1"
    ev = parse_event(json.dumps({"type": "input_audio_buffer.append", "audio": "!!", "event_id": "e2"}))
    with pytest.raises(ProtocolError) as info:
        decode_audio_field(ev)
    assert (info.value.param, info.value.event_id) == ("audio", "e2")
    assert decode_audio_field({"audio": base64.b64encode(b"\x01\x02").decode()}) == b"\x01\x02"


def test_every_live_decode_asks_for_the_encoder_pass_without_the_padding():
    """Someone waits on every live decode: partial and final ones take the trimmed encoder pass, whose effect
    tests/test_whisper_model.py checks on the real model (0 in OYEZ_WHISPER__TRIMMED_ENCODE_MARGIN_S turns it off)."""
    from types import SimpleNamespace

    from server.realtime.session import Session, Turn
    from server.settings import Settings

    service = SimpleNamespace(settings=Settings(), state=SimpleNamespace(registry=None, scheduler=None))
    session = Session(service, ws=None, model_hint=None)
    partial, final = (session._options(Turn("item_1", 0), final=f) for f in (False, True))
    assert partial.trim_padding and final.trim_padding
    assert partial.beam_size == 1 and final.beam_size is None  # the two kinds of decode, told apart


def test_a_turn_hears_the_previous_turn_only_once_that_turn_is_transcribed():
    """Session._context_of: partial decodes of a turn may run before the previous turn's final decode is done; they
    then decode alone instead of after an older turn. A turn after a failed one (no context of its own) too."""
    from types import SimpleNamespace

    import numpy as np

    from engines.live_context import previous_turn
    from server.realtime.session import Session, Turn

    older = previous_turn(np.ones(16000, dtype=np.float32), "the turn before", 10.0)
    session = SimpleNamespace(context=older, context_item="item_1")
    assert Session._context_of(session, Turn(item_id="item_2", start=0, previous_item="item_1")) is older
    assert Session._context_of(session, Turn(item_id="item_3", start=0, previous_item="item_2")) is None
    assert Session._context_of(session, Turn(item_id="item_1", start=0, previous_item=None)) is None
    manual = Turn(item_id="item_2", start=0, previous_item="item_1", live=False)  # a committed buffer: alone
    assert Session._context_of(session, manual) is None
