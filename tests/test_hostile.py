"""Hostile input: every kind of broken, lying, oversized or slow request gets a clear 4xx in OpenAI's
envelope, and the server stays up, answers the next real request correctly, and leaves no spooled
files, file descriptors, threads or memory behind.

The server here has its own TMPDIR (where Starlette spools uploads over 1 MB), a short body timeout
and a 10-minute audio limit, so each limit can be reached quickly. It serves the bundled `tiny.en`
weights: this file tests robustness, not accuracy, and every clip it transcribes is English.
"""

from __future__ import annotations

import io
import os
import random
import socket
import struct
import time
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from tests.conftest import running_server
from tests.helpers import DATA, SHARED, normalize, read_tsv, references, wav_bytes, wer
from tests.test_api_errors import assert_envelope
from tests.test_operations import scrape, value

JFK = DATA / "jfk.wav"
BODY_TIMEOUT = 4.0
MAX_AUDIO = 600
EDGE = SHARED / "formats" / "edge_cases"


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    spool = root / "tmp"
    spool.mkdir()
    with running_server(
        {"TMPDIR": str(spool), "OYEZ_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT), "OYEZ_MAX_AUDIO_SECONDS": str(MAX_AUDIO),
         "OYEZ_PRELOAD": '["whisper-1"]', "OYEZ_DEFAULT_WEIGHTS": "tiny.en"},
        root / "server.log",
    ) as srv, httpx.Client(base_url=srv.url, timeout=120) as http:
        srv.spool = spool
        assert_transcribes(http)  # warm: worker threads and buffers exist before the baseline
        # onnxruntime (Silero VAD) writes one `.ses` file into TMPDIR when first imported: not per request.
        srv.baseline = {"fds": srv.open_files(), "threads": srv.threads(), "spool": sorted(os.listdir(spool))}
        srv.http = http
        yield srv


def assert_transcribes(http) -> None:
    with open(JFK, "rb") as fh:
        r = http.post("/v1/audio/transcriptions", files={"file": ("jfk.wav", fh, "audio/wav")}, data={"model": "whisper-1"})
    assert r.status_code == 200, r.text
    assert wer(references()["jfk.wav"], r.json()["text"]) <= 0.10


def upload(http, content: bytes, name="upload.wav", ctype="audio/wav", data=None, files_extra=None):
    files = [("file", (name, content, ctype))] + list(files_extra or [])
    return http.post("/v1/audio/transcriptions", files=files, data=data if data is not None else {"model": "whisper-1"})


def wav_header(*, channels=1, rate=16000, bits=16, data_size=0xFFFFFF00, fmt_tag=1) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
    return b"RIFF" + struct.pack("<I", 0xFFFFFFF0) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + \
        b"data" + struct.pack("<I", data_size)


def silent_flac(seconds: float, rate: int = 8000) -> bytes:
    """A tiny FLAC that decodes to a lot of audio: a decompression bomb for the duration limit."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono")
        frame_len = rate * 10
        zeros = np.zeros((1, frame_len), dtype=np.int16)
        for i in range(int(seconds * rate) // frame_len):
            frame = av.AudioFrame.from_ndarray(zeros, format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, i * frame_len
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


# ---- shared edge cases, each with its expected behaviour (references.tsv) ------------------------------


def edge_rows():
    path = SHARED / "formats" / "references.tsv"
    if not path.exists():
        return [pytest.param(None, id="shared-data-absent")]
    return [pytest.param(r, id=r["file"]) for r in read_tsv(path) if r["file"].startswith("edge_cases/")]


@pytest.mark.parametrize("row", edge_rows())
def test_shared_edge_cases(hostile, row):
    if row is None:
        pytest.skip("shared data not present: formats/references.tsv")
    path = SHARED / "formats" / row["file"]
    r = upload(hostile.http, path.read_bytes(), name=path.name, ctype="application/octet-stream")
    name, expected = path.name, row["expected"]
    if name in ("empty_file.wav", "truncated_header.wav", "zero_samples.wav"):
        assert_envelope(r, 400, "file", "invalid_audio")
    elif expected.startswith("(no speech"):
        assert r.status_code == 200 and r.json()["text"] == "", r.text
    elif name == "p001_corrupt_last_frame.flac":
        assert r.status_code == 200 and wer(expected.split(" (")[0], r.json()["text"]) <= 0.25, r.text
    elif name == "stereo_two_talkers.wav":
        # Two voices at once, mixed to mono: the louder left channel's sentence comes through, at least its end
        # ("... who had vanished behind the curtain on the left"); the right one ("The horizon seems extremely
        # distant") is mostly drowned.
        left = expected.split(" | ")[0].removeprefix("LEFT: ")
        assert r.status_code == 200 and "behind the curtain on the left" in normalize(r.json()["text"]), r.text
        assert wer(left, r.json()["text"]) <= 0.8, r.text
    elif name == "hotwords_comfyui.mp3":
        assert r.status_code == 200 and "comfy" in r.json()["text"].lower(), r.text  # "ComfyUI", said twice
    else:
        pytest.fail(f"no expectation written for {name}")


# ---- bytes that are not what they claim ----------------------------------------------------------------


@pytest.mark.parametrize("ext", ["wav", "mp3", "flac", "ogg", "m4a", "mp4", "webm", "opus", "mpga", "aac"])
def test_random_bytes_with_audio_extensions(hostile, ext):
    content = random.Random(ext).randbytes(48_000)
    assert_envelope(upload(hostile.http, content, name=f"clip.{ext}", ctype=f"audio/{ext}"), 400, "file", "invalid_audio")


def test_random_bytes_behind_a_real_header(hostile):
    content = wav_header(data_size=64_000) + random.Random(1).randbytes(64_000)
    r = upload(hostile.http, content)  # noise that decodes as PCM: a valid, meaningless recording
    assert r.status_code == 200 and r.json()["text"] == "", r.text  # white noise: no speech, no made-up words


@pytest.mark.parametrize("fraction", [0.02, 0.5])
def test_truncated_files_keep_what_decodes_or_fail_cleanly(hostile, fraction):
    for source in (DATA / "p001.mp3", JFK) if fraction < 0.1 else (DATA / "p001.mp3",):
        data = source.read_bytes()
        r = upload(hostile.http, data[: int(len(data) * fraction)], name=source.name)
        if fraction < 0.1:  # a fifth of a second: no word in it, or too little to decode at all
            if r.status_code == 200:
                assert r.json()["text"] == "", r.text
            else:
                assert_envelope(r, 400, "file", "invalid_audio")
            continue
        # Half of "One. From fairest creatures we desire increase, | that thereby beauty's rose might never die."
        assert r.status_code == 200, r.text
        words = set(normalize(r.json()["text"]).split())
        assert len(words & {"from", "fairest", "creatures"}) >= 2, r.text  # the first half is there
        assert not words & {"beautys", "rose", "never", "die"}, r.text  # and nothing of the cut-off second half


def test_mislabeled_files_are_read_from_their_bytes(hostile):
    r = upload(hostile.http, (DATA / "p001.mp3").read_bytes(), name="recording.wav", ctype="audio/wav")
    assert r.status_code == 200 and wer(references()["p001.mp3"], r.json()["text"]) <= 0.25, r.text
    r = upload(hostile.http, b"%PDF-1.4\n" + b"x" * 4000, name="song.mp3", ctype="audio/mpeg")
    assert_envelope(r, 400, "file", "invalid_audio")


def test_header_claiming_hours_of_audio(hostile):
    """The header's sizes promise about 37 hours; only one second follows. No hang, no huge buffer."""
    one_second = wav_bytes(np.zeros(16000, dtype=np.float32))[44:]
    before = rss_mib(hostile.pid)
    r = upload(hostile.http, wav_header() + one_second)  # the client's 120 s timeout fails a hang
    assert r.status_code == 200 and r.json()["text"] == "", r.text
    assert r.json()["usage"]["seconds"] == 1  # the samples that are there, not the 37 hours claimed
    assert rss_mib(hostile.pid) - before < 200  # no buffer sized from the header's claim (37 h would be 8 GB)


@pytest.mark.parametrize(
    "header",
    [wav_header(channels=0), wav_header(rate=0), wav_header(bits=0), wav_header(channels=65535),
     wav_header(fmt_tag=0x7777), wav_header(rate=1) + b"\0" * 100],
    ids=["0-channels", "0-rate", "0-bits", "65535-channels", "unknown-codec", "1-hz"],
)
def test_absurd_headers(hostile, header):
    r = upload(hostile.http, header + b"\0" * 2000)
    if r.status_code == 200:  # read somehow: it holds only zeros, so no words
        assert r.json()["text"] == "", r.text
    else:  # undecodable, or (2,100 bytes at 1 Hz) 35 minutes long, over this server's 10-minute limit
        assert assert_envelope(r, 400, "file")["code"] in ("invalid_audio", "audio_too_long"), r.text


def test_decompression_bomb_hits_the_duration_limit(hostile):
    bomb = silent_flac(MAX_AUDIO * 2)  # 20 minutes of audio in a few kilobytes
    assert len(bomb) < 2 * 2**20
    before = rss_mib(hostile.pid)
    r = upload(hostile.http, bomb, name="bomb.flac", ctype="audio/flac")
    err = assert_envelope(r, 400, "file", "audio_too_long")
    assert f"{MAX_AUDIO}" in err["message"]
    assert rss_mib(hostile.pid) - before < 400  # stops at the limit instead of decoding all of it


# ---- fields ---------------------------------------------------------------------------------------------

TEXT_FIELDS = ["model", "language", "prompt", "response_format", "temperature", "stream", "chunking_strategy",
               "include[]", "timestamp_granularities[]", "chunking_strategy[type]", "known_speaker_names[]",
               "known_speaker_references[]"]


@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_a_file_where_text_belongs(hostile, field):
    data = {"model": "whisper-1"} if field != "model" else {}
    r = upload(hostile.http, JFK.read_bytes(), data=data, files_extra=[(field, ("x.txt", b"whisper-1", "text/plain"))])
    assert_envelope(r, 400, field.split("[")[0])


@pytest.mark.parametrize(
    "data, param",
    [({"model": "whisper-1", "temperature": "1e309"}, "temperature"),
     ({"model": "whisper-1", "temperature": "0x10"}, "temperature"),
     ({"model": "whisper-1", "stream": "2"}, "stream"),
     ({"model": "whisper-1", "language": "e" * 10_000}, "language"),
     ({"model": "whisper-1", "response_format": "json\0"}, "response_format"),
     ({"model": "whisper-1", "chunking_strategy": '{"type": "server_vad", "threshold": [1]}'}, "chunking_strategy"),
     ({"model": "whisper-1", "chunking_strategy": "[]"}, "chunking_strategy"),
     ({"model": "whisper-1", "chunking_strategy": '{"type": "server_vad", "silence_duration_ms": 1e400}'},
      "chunking_strategy"),
     ({"model": "x" * 100_000}, "model"),
     ({"model": "../../../etc/passwd"}, "model"),
     ({"model": "/etc/passwd"}, "model"),
     ({"model": "whisper-1\0"}, "model")],
)
def test_wrong_values(hostile, data, param):
    r = upload(hostile.http, JFK.read_bytes(), data=data)
    assert r.status_code in (400, 404), r.text
    assert_envelope(r, r.status_code, param)


def test_path_like_filename_never_reaches_the_filesystem(hostile, tmp_path):
    target = tmp_path / "pwned.wav"
    for name in (f"../../../../..{target}", f"{target}\0/é/雪.wav"):
        r = upload(hostile.http, JFK.read_bytes(), name=name)
        assert r.status_code == 200 and wer(references()["jfk.wav"], r.json()["text"]) <= 0.10, r.text
    assert not target.exists()


def test_huge_and_unicode_prompts(hostile):
    http = hostile.http
    r = upload(http, JFK.read_bytes(), data={"model": "whisper-1", "response_format": "verbose_json",
                                             "prompt": "Ünïcødé 雪 🎤 مرحبا \u202e reversed \u0301 \x00\x01\x02 control"})
    assert r.status_code == 200 and wer(references()["jfk.wav"], r.json()["text"]) <= 0.35, r.text
    # 300 kB of varied words: Whisper keeps only the prompt's last 223 tokens; the rest must cost nothing.
    words = random.Random(3).choices(["alpha", "Oyez", "bravo", "Kennedy", "country", "ask", "fellow", "ünï"], k=50_000)
    r = upload(http, JFK.read_bytes(), data={"model": "whisper-1", "prompt": " ".join(words)})
    assert r.status_code == 200 and wer(references()["jfk.wav"], r.json()["text"]) <= 0.35, r.text
    # Invalid UTF-8 in a text field is replaced, not a crash.
    files = [("file", ("a.wav", JFK.read_bytes(), "audio/wav")), ("model", (None, b"whisper-1")),
             ("language", (None, b"\xff\xfe\xc3("))]
    assert_envelope(http.post("/v1/audio/transcriptions", files=files), 400, "language")
    # A prompt bigger than any text part may be is refused while parsing the form.
    big = "a" * (8 * 2**20)
    assert_envelope(upload(http, JFK.read_bytes(), data={"model": "whisper-1", "prompt": big}), 400)


@pytest.mark.parametrize(
    "refs",
    [["not a data url"], ["data:audio/wav;base64,@@@@"], ["data:audio/wav,raw-bytes"], ["data:;base64,"],
     ["data:audio/wav;base64,AAAA"] * 5, ["data:audio/wav;base64," + "A" * (4 * (5 * 2**20 // 3) + 4000)]],
    ids=["plain", "bad-base64", "not-base64", "empty", "too-many", "too-big"],
)
def test_malformed_speaker_references(hostile, refs):
    data = {"model": "gpt-4o-transcribe-diarize", "known_speaker_names[]": [f"s{i}" for i in range(len(refs))][:4],
            "known_speaker_references[]": refs}
    assert_envelope(upload(hostile.http, JFK.read_bytes(), data=data), 400, "known_speaker_references")


def test_too_many_speaker_names(hostile):
    data = {"model": "gpt-4o-transcribe-diarize", "known_speaker_names[]": [f"s{i}" for i in range(5)]}
    assert_envelope(upload(hostile.http, JFK.read_bytes(), data=data), 400, "known_speaker_names")


def test_thousands_of_fields(hostile):
    data = {"model": "whisper-1", **{f"extra_{i}": "x" for i in range(5000)}}
    err = assert_envelope(upload(hostile.http, JFK.read_bytes(), data=data), 400)
    assert "fields" in err["message"].lower()
    files = [("file", (f"f{i}.wav", b"RIFF", "audio/wav")) for i in range(50)]
    assert_envelope(hostile.http.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-1"}), 400)
    r = hostile.http.post("/v1/audio/transcriptions", content="&".join(f"k{i}=v" for i in range(5000)),
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert_envelope(r, 400)


# ---- sizes and time -------------------------------------------------------------------------------------


def test_lying_content_length_is_refused_before_reading(hostile):
    host, port = hostile.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                  b"boundary=b\r\nContent-Length: 999999999999\r\n\r\n--b\r\n")
        reply = b""
        while b"request_too_large" not in reply:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"request_too_large" in reply


def test_chunked_upload_past_the_limit_is_cut_off(hostile):
    """No Content-Length: the bytes are counted as they arrive and the upload stops at the limit.

    100 MB are offered in 1 MB chunks while the reply is watched for. The 413 must come back while the
    client is still sending, near the 25 MB limit: a server that spooled the whole body and checked
    its size afterwards would answer only after all 100 MB had gone.
    """
    offered, chunk = 100, 2**20
    before = scrape(hostile.http)
    host, port = hostile.url.removeprefix("http://").split(":")
    sent, reply = 0, b""
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                  b"boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n")
        head = (b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
                b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n')
        s.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        frame = b"%x\r\n%s\r\n" % (chunk, b"\0" * chunk)
        for _ in range(offered):
            try:
                s.sendall(frame)
            except OSError:  # the server answered and closed while we were still writing
                break
            sent += chunk
            s.setblocking(False)
            try:
                reply += s.recv(65536)
            except (BlockingIOError, OSError):
                pass
            s.setblocking(True)
            if reply:
                break
        s.settimeout(30)
        while b"request_too_large" not in reply:
            try:
                data = s.recv(65536)
            except OSError:
                break
            if not data:
                break
            reply += data
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
    assert b'"code":"request_too_large"' in reply
    # Answered near the limit (25 MB + socket buffers), long before the 100 MB offered were sent.
    assert sent < 50 * 2**20, f"{sent / 2**20:.0f} MB sent before the 413"
    key = 'oyez_errors_total'
    after = scrape(hostile.http)
    assert value(after, key, status="413", code="request_too_large") - value(before, key, status="413",
                                                                            code="request_too_large") == 1


def trickle(url: str, seconds: float) -> tuple[bytes, float]:
    """Send headers promising 100 kB, then a few bytes every 0.3 s: return the reply and when it came."""
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=seconds + 30) as s:
        s.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                  b"boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n")
        s.settimeout(0.3)
        reply = b""
        while time.monotonic() - started < seconds:
            try:
                s.sendall(b"x" * 8)
            except OSError:
                pass
            try:
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
            except TimeoutError:
                continue
            except OSError:
                break
        return reply, time.monotonic() - started


def test_slow_upload_gets_408_and_is_dropped(hostile):
    reply, elapsed = trickle(hostile.url, BODY_TIMEOUT + 20)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:300]
    assert b'"code":"request_timeout"' in reply
    # Not before the deadline; and while the client was still trickling (it would go on for 20 s more).
    assert elapsed >= BODY_TIMEOUT - 0.5


def test_client_that_hangs_up_mid_upload(hostile):
    """Five clients send 2 MB of a promised 5 MB (spooled to disk past 1 MB) and hang up: each is logged as
    gone (499), and its spooled file and connection are gone too."""
    before = scrape(hostile.http)
    host, port = hostile.url.removeprefix("http://").split(":")
    for _ in range(5):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                      b"boundary=b\r\nContent-Length: 5000000\r\n\r\n--b\r\nContent-Disposition: form-data; "
                      b'name="file"; filename="a.wav"\r\n\r\n' + b"\0" * 2_000_000)
    labels = {"endpoint": "transcriptions", "model": "none", "response_format": "none", "status": "499"}
    deadline = time.monotonic() + 60  # the server notices each hang-up when it next reads the body
    while True:
        gone = value(scrape(hostile.http), "oyez_requests_total", **labels) - value(before, "oyez_requests_total", **labels)
        clean = sorted(os.listdir(hostile.spool)) == hostile.baseline["spool"]
        if (gone == 5 and clean) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert gone == 5
    assert sorted(os.listdir(hostile.spool)) == hostile.baseline["spool"]  # no spooled upload left behind
    assert hostile.log_text().count("client disconnected before its request body was complete") >= 5
    assert_transcribes(hostile.http)


# ---- afterwards: still serving, nothing left behind -----------------------------------------------------


def test_repeats_do_not_grow_memory(hostile):
    http = hostile.http

    def round_of_abuse():
        upload(http, random.Random(7).randbytes(3 * 2**20), name="noise.mp3")  # spooled to disk (> 1 MB)
        upload(http, silent_flac(MAX_AUDIO * 2), name="bomb.flac")
        upload(http, JFK.read_bytes(), data={"model": "whisper-1", "prompt": "p" * 8 * 2**20})  # over the part limit
        upload(http, JFK.read_bytes(), data={"model": "whisper-1", **{f"f{i}": "x" for i in range(3000)}})
        trickle(hostile.url, 0.5)  # hangs up after half a second, mid-upload
        assert_transcribes(http)

    round_of_abuse()
    first = rss_mib(hostile.pid)
    for _ in range(2):
        round_of_abuse()
    assert rss_mib(hostile.pid) - first < 150, (first, rss_mib(hostile.pid))


def test_server_is_clean_afterwards(hostile):
    assert_transcribes(hostile.http)
    # anyio keeps idle worker threads until the next job is handed out, then retires those idle for
    # over 10 s: wait, then give it one job (an undecodable upload, decoded in a worker thread).
    time.sleep(11)
    r = hostile.http.post("/v1/audio/transcriptions", files={"file": ("x.wav", b"RIFF" + bytes(64), "audio/wav")},
                          data={"model": "whisper-1"})
    assert r.status_code == 400
    deadline = time.monotonic() + 30  # connections close
    while time.monotonic() < deadline:
        leftovers = sorted(os.listdir(hostile.spool)) != hostile.baseline["spool"]
        fds, threads = hostile.open_files(), hostile.threads()
        if not leftovers and fds <= hostile.baseline["fds"] + 3 and threads <= hostile.baseline["threads"] + 2:
            break
        time.sleep(1)
    assert sorted(os.listdir(hostile.spool)) == hostile.baseline["spool"]
    assert hostile.open_files() <= hostile.baseline["fds"] + 3, (hostile.baseline, hostile.open_files())
    assert hostile.threads() <= hostile.baseline["threads"] + 2, (hostile.baseline, hostile.threads())
    assert "Traceback" not in hostile.log_text()
