"""Typed values passed between the server and the engines."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

Task = Literal["transcribe", "translate"]


@dataclass(frozen=True)
class VadParams:
    """Voice-activity detection settings (Silero VAD, as shipped with faster-whisper)."""

    threshold: float = 0.5
    speech_pad_ms: int = 400
    min_silence_duration_ms: int = 2000


@dataclass(frozen=True)
class DiarizerConfig:
    """How to build the diarization pipeline (engines/diarization/pipeline.py); see the README's settings."""

    pipeline: str | None = None  # None = embedded (segmentation-3.0 + CAM++); else a pipeline dir or Hub id
    hf_token: str | None = None
    allow_downloads: bool = False
    cache_dir: Path = Path("~/.cache/oyez")
    device: str = "auto"
    threads: int = 1  # torch CPU threads; 0 = torch's default (all cores)
    # Embedded pipeline hyper-parameters, chosen on data (README, "Diarization").
    clustering_threshold: float = 0.7
    min_cluster_size: int = 12
    segmentation_step: float = 0.1
    # "spectral": the speaker count from the eigengap of a pruned cosine affinity (engines/diarization/clustering.py);
    # "agglomerative": pyannote's centroid linkage cut at clustering_threshold.
    clustering: str = "spectral"
    spectral_prune: float = 0.3  # share of each row of the affinity kept (0.05-0.5 tried on the tuning half)
    normalised_laplacian: bool = True  # eigengap of I - D^-1/2 A D^-1/2 (else of D - A, as 3D-Speaker)
    seconds_per_speaker: float = 10.0  # duration prior: at most one speaker per this much audio (unless bounded)
    merge_threshold: float | None = None  # merge spectral clusters whose centroids are closer (cosine) than this
    min_active_ratio: float = 0.1  # share of a 10 s chunk a local speaker must hold alone to be clustered (pyannote: 0.2)
    # Cosine below which two stretches of one local speaker count as two voices (None = never split).
    voice_split_threshold: float | None = 0.4
    # How far a turn may grow over adjoining sound: 10 dB over the floor or out of the background (engines/diarization/turn_edges.py).
    edge_extension_s: float = 0.5
    # Cosine similarity a cluster needs with a known speaker's reference to take the name.
    match_threshold: float = 0.5


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
    ):
        self._segments = segments
        self.language = language
        self.language_probability = language_probability
        self.audio = audio
        self.prompt_tokens = prompt_tokens
        self.task = task

    def __iter__(self) -> Iterator[Segment]:
        return self._segments

    def close(self) -> None:
        close = getattr(self._segments, "close", None)
        if close:
            close()

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
        )


@dataclass(frozen=True)
class Transcript:
    language: str
    language_probability: float
    audio: AudioInfo
    prompt_tokens: int
    task: Task
    segments: list[Segment]

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
