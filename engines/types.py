"""Typed values passed between the server and the engines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Literal, Protocol

if TYPE_CHECKING:
    from engines.audio import Audio

Task = Literal["transcribe", "translate"]

SAMPLE_RATE = 16_000  # Hz: what every engine takes (Whisper, Silero VAD, pyannote, CAM++)


@dataclass(frozen=True)
class VadParams:
    """Voice-activity detection settings (Silero VAD, as shipped with faster-whisper)."""

    threshold: float = 0.5
    speech_pad_ms: int = 400
    min_silence_duration_ms: int = 2000


@dataclass(frozen=True, eq=False)
class KnownSpeaker:
    """A named voice to recognise in diarized audio: a 2-10 s reference clip, 16 kHz mono float32."""

    name: str
    samples: object  # numpy.ndarray (kept untyped so this module needs no numpy import)


@dataclass(frozen=True)
class TranscribeOptions:
    task: Task = "transcribe"
    language: str | None = None  # ISO-639-1; None means detect
    prompt: str | None = None
    temperature: float = 0.0  # 0 = fallback ladder 0.0, 0.2 ... 1.0; >0 = sample at that value
    word_timestamps: bool = False
    token_logprobs: bool = False
    vad: VadParams | None = field(default_factory=VadParams)  # None = whole file, no VAD
    known_speakers: tuple[KnownSpeaker, ...] = ()  # diarization only
    # Live turns (server/realtime): text the decode must start with (the words already sent), a beam
    # size for this decode only (None = the engine's), and whether temperature 0 may fall back to
    # sampling (a quick partial decode does not). A prefix decodes sequentially, never batched.
    prefix: str | None = None
    beam_size: int | None = None
    fallback: bool = True
    # Text only, no timestamp tokens (faster-whisper's `without_timestamps`): one segment per window. A live
    # turn decoded after the previous turn's forced text needs it (engines/live_context.py).
    without_timestamps: bool = False
    # Decode the first few seconds as a window of their own, so the first segment comes out
    # sooner (a stream's first delta), at the cost of one more encoder pass (engines/longform.py).
    early_first_segment: bool = False
    # Encode short windows' speech plus a margin, not the padded 30 s (engines/whisper_model.py: faster, and
    # the text can differ): for decodes someone is waiting on, such as live captions. The early first
    # segment is encoded so whenever its language is known.
    trim_padding: bool = False
    # Diarization only: the speaker count, or bounds on it (None = estimated from the audio).
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    bytes: list[int]


@dataclass(frozen=True)
class Segment:
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    text_token_count: int = 0  # tokens of text, timestamps and other special tokens excluded
    words: list[Word] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    speaker: str | None = None  # set by diarization


class TextJoiner:
    """Joins segment texts into the transcript text, piece by piece.

    Streaming sends each piece as a delta and the non-streamed response uses the
    same joiner, so the concatenated deltas always equal the full text.
    """

    def __init__(self) -> None:
        self.text = ""

    def add(self, segment: Segment) -> str:
        piece = segment.text if self.text else segment.text.lstrip()
        piece = piece.rstrip()
        self.text += piece
        return piece


@dataclass(frozen=True)
class AudioInfo:
    duration: float  # seconds of decoded audio
    speech_duration: float  # seconds actually fed to the model (after VAD)


@dataclass
class CoverageStats:
    """What the coverage guarantee (engines/coverage.py) did for one request, updated as it happens."""

    redecoded: int = 0  # stretches no segment covered, decoded again, whose text was kept
    redecoded_seconds: float = 0.0  # their speech, in seconds
    dropped: int = 0  # stretches decoded again whose text the hallucination guard threw away
    scanned_seconds: float = 0.0  # gap audio the check's VAD looked at
    scan_wall_s: float = 0.0  # time spent in that VAD
    redecode_wall_s: float = 0.0  # time spent decoding again
    segment_ids: list[int] = field(default_factory=list)  # ids of the segments re-decoding added


class TranscriptionStream:
    """Segments as the decoder produces them, plus what is known before decoding starts.

    Iterate it to drive decoding; `close()` stops the work early (e.g. a client went away).
    """

    def __init__(
        self,
        segments: Iterator[Segment],
        *,
        language: str,
        language_probability: float,
        audio: AudioInfo,
        prompt_tokens: int,
        task: Task,
        coverage: CoverageStats | None = None,
    ):
        self._segments = segments
        self.language = language
        self.language_probability = language_probability
        self.audio = audio
        self.prompt_tokens = prompt_tokens
        self.task = task
        self.coverage = coverage if coverage is not None else CoverageStats()  # shared, updated while decoding

    @property
    def redecoded(self) -> int:
        """Stretches of speech no segment covered that were decoded again (so far)."""
        return self.coverage.redecoded

    @property
    def redecoded_seconds(self) -> float:
        return self.coverage.redecoded_seconds

    def __iter__(self) -> Iterator[Segment]:
        return self._segments

    def close(self) -> None:
        close = getattr(self._segments, "close", None)
        if close:
            close()

    def relabelled(self, segments: Iterator[Segment]) -> TranscriptionStream:
        """A stream of other segments (e.g. with speakers) that keeps reading this one's metadata.

        Long audio updates `audio` as each window finishes, so the new stream must not copy it.
        """
        return _DerivedStream(segments, self)

    def collect(self) -> Transcript:
        return self.transcript(list(self))  # segments first: long audio updates `audio` as its windows finish

    def transcript(self, segments: list[Segment]) -> Transcript:
        """The transcript of `segments` decoded from this stream."""
        return Transcript(
            language=self.language,
            language_probability=self.language_probability,
            audio=self.audio,
            prompt_tokens=self.prompt_tokens,
            task=self.task,
            segments=segments,
            redecoded=self.coverage.redecoded,
            redecoded_seconds=self.coverage.redecoded_seconds,
        )


class _DerivedStream(TranscriptionStream):
    def __init__(self, segments: Iterator[Segment], source: TranscriptionStream):
        self._source = source
        super().__init__(
            segments, language=source.language, language_probability=source.language_probability,
            audio=source.audio, prompt_tokens=source.prompt_tokens, task=source.task, coverage=source.coverage,
        )

    @property
    def audio(self) -> AudioInfo:
        return self._source.audio

    @audio.setter
    def audio(self, value: AudioInfo) -> None:
        self._source.audio = value


class Engine(Protocol):
    """What the registry hands out for a model name: a Whisper engine or the diarizing transcriber."""

    def check(self, options: TranscribeOptions) -> None:
        """Raise UnsupportedOptionError (engines/errors.py) for options this engine cannot honour."""

    def transcribe(self, audio: Audio, options: TranscribeOptions) -> TranscriptionStream:
        """Start decoding; segments come out of the stream as they are produced (blocking calls)."""

    def close(self) -> None:
        """Free the weights; called only when no request uses the engine."""


@dataclass(frozen=True)
class Transcript:
    language: str
    language_probability: float
    audio: AudioInfo
    prompt_tokens: int
    task: Task
    segments: list[Segment]
    redecoded: int = 0  # stretches of speech no segment covered, decoded again (engines/coverage.py)
    redecoded_seconds: float = 0.0

    @property
    def text(self) -> str:
        joiner = TextJoiner()
        for segment in self.segments:
            joiner.add(segment)
        return joiner.text

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]

    @property
    def logprobs(self) -> list[TokenLogprob]:
        return [lp for s in self.segments for lp in s.logprobs]

    @property
    def output_tokens(self) -> int:
        return sum(s.text_token_count for s in self.segments)
