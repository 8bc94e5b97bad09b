"""How the engines are built: one config object per engine family, passed in as it is.

The server nests these in its settings (`Settings.whisper`, `Settings.diarization`), so a value is
declared once, here, with its default and its meaning; nothing copies it field by field. Pydantic
models, so the server's settings loader can fill them from the environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class WhisperConfig(BaseModel):
    """Whisper weights and how CTranslate2 runs them (engines/whisper.py, engines/registry.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default_weights: str = Field(
        "base", description="Weights behind every public model name: bundled `base` or `tiny.en`, a directory, or a repo id."
    )
    cache_dir: Path = Field(Path("~/.cache/oyez"), description="Joined bundled weights and downloads.")
    allow_downloads: bool = Field(
        False, description="Allow Hugging Face downloads for configured repo ids (and a Hub diarization pipeline)."
    )
    device: str = Field(
        "auto", description="auto, cpu or cuda. `auto` is CUDA for speech only when CTranslate2 can load CUDA 12's cuBLAS "
        "(libcublas.so.12), and for diarization when torch sees a GPU; `cpu`/`cuda` set both."
    )
    compute_type: str = Field("auto", description="auto (int8 on CPU, float16 on CUDA) or any CTranslate2 type.")
    cpu_threads: int = Field(0, description="Threads per model replica on CPU; 0 = the cores divided among replicas.")
    num_workers: int = Field(
        0, description="CTranslate2 replicas per loaded model (decodes at once inside it); 0 = auto (engines/parallelism.py)."
    )
    beam_size: int = Field(5, description="Beam width of the decoder.")
    batch_size: int = Field(
        0, description="VAD chunks decoded per batch within a request (BatchedInferencePipeline); 0 = sequential."
    )
    max_batch: int = Field(
        0, ge=0, description="Model calls of concurrent requests merged into one batched CTranslate2 call "
        "(engines/batching.py); 0 = auto (32 on CUDA; 1 on CPU, where merging measured no gain), 1 = no merging."
    )
    solo_replica: bool = Field(
        True, description="On CPU, also load a replica with all the model's threads (replicas x threads), for whenever "
        "a single request is decoding (its weights are held twice); concurrent requests use the other replicas."
    )
    coverage_redecode: bool = Field(
        True, description="Decode again any stretch of speech (1 s or more) that no decoded segment covers, and merge "
        "it in order (engines/coverage.py); false = trust the decoder."
    )
    trimmed_encode_margin_s: float = Field(
        15.0, ge=0, description="Where latency is the point (a stream's early first window when its language is "
        "known, live captions' decodes), encode a short window's speech plus this many seconds instead of the whole "
        "padded 30 s, on CPU (engines/whisper_model.py); 0 = always the whole window. File requests are always "
        "encoded whole."
    )
    token_budget_per_second: float = Field(
        20.0, ge=0, description="A decode of a short window may generate at most 16 + this many new tokens per second "
        "of audio (at 20: windows under about 10 s; Whisper's own limit is 448 whatever the audio), and one that uses "
        "them all counts as failed, as a too-repetitive one does (engines/whisper_model.py); 0 = Whisper's limit.",
    )
    window_seconds: float = Field(
        300.0, description="Audio longer than 1.25 x this is transcribed in windows of about this length, cut at quiet "
        "points, so memory stays bounded; 0 = never."
    )


class DiarizerConfig(BaseModel):
    """How to build the diarization pipeline (engines/diarization/pipeline.py).

    The embedded pipeline's hyper-parameters were chosen on data: see docs/diarization.md.
    Where the pipeline runs (device) and where downloads go come from WhisperConfig.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    pipeline: str | None = Field(
        None, description="None = embedded offline pipeline (segmentation-3.0 + CAM++); or a pyannote pipeline directory / Hub id."
    )
    hf_token: str | None = Field(None, description="Hugging Face token for a Hub pipeline (with allow_downloads).")
    threads: int = Field(
        0, ge=0, description="torch CPU threads for diarization; 0 = every core while no speech is being decoded in "
        "this process and one while some is (two thread pools on the same cores thrash)."
    )
    clustering: str = Field(
        "spectral", pattern="^(spectral|agglomerative)$",
        description="Speaker clustering of the embedded pipeline: `spectral` (the count from the eigengap of a pruned "
        "cosine affinity, engines/diarization/clustering.py) or `agglomerative` (pyannote's centroid linkage cut at "
        "clustering_threshold).",
    )
    clustering_threshold: float = Field(
        0.7, description="Distance threshold of agglomerative clustering (not used by spectral)."
    )
    min_cluster_size: int = Field(
        12, description="Smallest cluster (in window embeddings) kept as a speaker, agglomerative clustering only."
    )
    spectral_prune: float = Field(
        0.3, gt=0, le=1, description="Share of each row of the spectral affinity kept (0.05-0.5 tried on the tuning half)."
    )
    normalised_laplacian: bool = Field(
        True, description="Spectral: eigengap of the normalised Laplacian I - D^-1/2 A D^-1/2 (else of D - A, as 3D-Speaker)."
    )
    seconds_per_speaker: float = Field(
        10.0, gt=0, description="Spectral: at most one speaker per this much audio, unless the request bounds the count."
    )
    merge_threshold: float | None = Field(
        0.75, description="Spectral: merge clusters whose centroids are more alike (cosine) than this, last; unset = "
        "never (0.65-0.8 tried on the tuning data: 30 s meeting excerpts need it, simulated voices never merge above 0.7).",
    )
    spectral_split: str = Field(
        "kmeans", pattern="^(kmeans|linkage)$",
        description="Spectral: how the k clusters are formed once the eigengap gave k: `kmeans` on the first k "
        "eigenvectors, or `linkage`: the average-linkage tree of the embeddings (cosine) cut into k clusters.",
    )
    spectral_auto_prune: bool = Field(
        False, description="Spectral: choose the prune share per file among 0.05-0.5, the one with the clearest "
        "eigengap for how much of the affinity it keeps (NME-SC), instead of spectral_prune.",
    )
    min_speaker_s: float = Field(
        1.0, ge=0, description="Spectral: a cluster holding less speech than this (seconds) is dissolved into the "
        "nearest remaining ones, and split_threshold never cuts off less (0 = keep every cluster); not applied when "
        "the request gives num_speakers.",
    )
    split_threshold: float | None = Field(
        0.7, description="Spectral: after the eigengap, cut a cluster in two (2-means) while the halves' centroids "
        "are less alike (cosine) than this and each half holds min_speaker_s of speech; unset = never (0.4-0.8 "
        "tried on the tuning data).",
    )
    agglomerative_below_s: float = Field(
        0.0, ge=0, description="Spectral: audio shorter than this (seconds) is clustered by the agglomerative "
        "clustering instead (too few embeddings for an eigengap); 0 = never.",
    )
    min_active_ratio: float = Field(
        0.1, ge=0, le=1, description="Share of a 10 s chunk a local speaker must hold alone to be clustered (pyannote: 0.2)."
    )
    segmentation_step: float = Field(0.1, description="Segmentation window step, as a fraction of its 10 s window.")
    voice_split_threshold: float = Field(
        0.4, ge=0, le=1, description="Cosine below which two stretches of one chunk's local speaker are split as "
        "two voices (embedded pipeline; 0 = never split)."
    )
    embedding_exclude_overlap: bool = Field(
        False, description="Embed each local speaker from the frames where it talks alone (when they are at least "
        "half of its frames in the chunk), as pyannote's speaker-diarization-3.1 does; else from all its frames.",
    )
    edge_extension_s: float = Field(
        0.5, ge=0, description="How far a speaker turn may grow over adjoining sound: 10 dB over the floor, or 4 robust "
        "sigmas over the background where nobody speaks (engines/diarization/turn_edges.py; 0 = off)."
    )
    segment_overlap_s: float = Field(
        2.0, ge=0, description="How far (seconds) each edge of a diarized_json segment may move out over its speaker's "
        "voice where the diarization hears it beneath another speaker's, so that two speakers' segments overlap where "
        "they talked at once (engines/diarization/transcriber.py, widen_over_voice); 0 = segments never overlap. "
        "Chosen on the simulated tuning half (docs/diarization-evaluation.md, round 8).",
    )
    match_threshold: float = Field(
        0.5, description="Cosine similarity a voice needs with a known speaker's reference to get that name."
    )
    turn_reassign_min_s: float = Field(
        0.3, ge=0, description="Each exclusive turn at least this long (seconds) gets an embedding of its own (pooled "
        "from CAM++'s frames, as the window embeddings are) and moves to the cluster whose centroid it is closest to; "
        "0 = turns keep the label of the windows they were cut from. Chosen on the simulated tuning half "
        "(docs/diarization-evaluation.md, round 4).",
    )
    turn_reassign_margin: float = Field(
        0.0, ge=0, description="How much closer (cosine) a turn, or a window of one (turn_split_window_s), must be to "
        "another cluster's centroid than to its own to move.",
    )
    turn_split_window_s: float = Field(
        0.75, ge=0, description="Each exclusive turn at least this long (seconds) is also embedded in windows of this "
        "length every turn_split_hop_s (pooled as the turns are), and the stretches whose windows are closest to another "
        "cluster's centroid move to that cluster: a change of speaker the turn missed; 0 = off. Chosen on the simulated "
        "tuning halves (docs/diarization-evaluation.md, rounds 5 and 6).",
    )
    turn_split_hop_s: float = Field(0.25, gt=0, description="Step between the windows of turn_split_window_s.")
    turn_naming_min_s: float = Field(
        0.3, ge=0, description="With known speakers, each turn of a named cluster at least this long (seconds) is "
        "embedded on its own and takes the name its voice is closest to when that is another known speaker (a cluster "
        "holding two enrolled voices); 0 = cluster names only. Chosen on the simulated tuning half "
        "(docs/diarization-evaluation.md, round 4).",
    )
    turn_naming_margin: float = Field(
        0.0, description="How much closer (cosine) a turn must be to another known speaker than to its cluster's name "
        "to take that name.",
    )
    match_floor: float = Field(
        0.3, description="Names no voice reached at match_threshold are paired one to one with the voices still "
        "unnamed; a pair this similar (cosine) keeps the name (engines/diarization/speakers.py; 1 = off)."
    )
