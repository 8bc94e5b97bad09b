"""A complete pyannote pipeline from a local directory (OYEZ_DIARIZATION_PIPELINE=/dir), as an operator
would point Oyez at a downloaded `pyannote/speaker-diarization-community-1`.

No such pipeline ships on PyPI, so the test writes one in pyannote's own layout from the offline weights:
`config.yaml` naming `pyannote.audio.pipelines.SpeakerDiarization` with `$model/` sub-folders, the
segmentation-3.0 checkpoint, CAM++ saved as a pyannote checkpoint, and an identity PLDA (pyannote's
constructor loads one; agglomerative clustering never uses it). pyannote's loader, not Oyez's, reads it.
"""

from __future__ import annotations

import base64
import shutil

import pytest

pytest.importorskip("pyannote.audio")

from tests.helpers import DATA, assert_timeline, read_wav, shared  # noqa: E402

SAMPLE = DATA / "diarization" / "sample.wav"
CONFIG = """\
version: 4.0.0
pipeline:
  name: pyannote.audio.pipelines.SpeakerDiarization
  params:
    segmentation: $model/segmentation
    embedding: $model/embedding
    plda: $model/plda
    clustering: AgglomerativeClustering
    embedding_exclude_overlap: true
    segmentation_batch_size: 32
    embedding_batch_size: 32
params:
  segmentation:
    min_duration_off: 0.0
  clustering:
    method: centroid
    min_cluster_size: 12
    threshold: 0.7
"""


def write_pipeline(root):
    import lightning
    import numpy as np
    import pyannote.audio
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications

    from engines.bundled import diarization_weights
    from engines.diarization.embeddings import DIMENSION, CamppEmbedding

    weights = diarization_weights()
    shutil.copytree(weights.segmentation.parent, root / "segmentation")
    (root / "embedding").mkdir()
    torch.save({
        "state_dict": CamppEmbedding(str(weights.embedding)).state_dict(),
        "hyper_parameters": {},
        "pytorch-lightning_version": lightning.__version__,
        "pyannote.audio": {
            "versions": {"torch": torch.__version__, "pyannote.audio": pyannote.audio.__version__},
            "architecture": {"module": "engines.diarization.embeddings", "class": "CamppEmbedding"},
            "specifications": Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=10.0),
        },
    }, root / "embedding" / "pytorch_model.bin")
    (root / "plda").mkdir()
    np.savez(root / "plda" / "xvec_transform.npz", mean1=np.zeros(DIMENSION), mean2=np.zeros(128),
             lda=np.eye(DIMENSION)[:, :128])
    np.savez(root / "plda" / "plda.npz", mu=np.zeros(128), tr=np.eye(128), psi=np.ones(128))
    (root / "config.yaml").write_text(CONFIG)
    return root


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    return write_pipeline(tmp_path_factory.mktemp("pipeline"))


def test_settings_load_the_directory_with_pyannotes_loader(pipeline_dir):
    import numpy as np
    from pyannote.audio.pipelines import SpeakerDiarization
    from pyannote.metrics.diarization import DiarizationErrorRate

    from engines.audio import decode_audio
    from engines.diarization.pipeline import _CamppDiarization
    from server.app import build_registry
    from server.settings import Settings
    from tests.diarization_scoring import hypothesis, read_rttm

    diarizer = build_registry(Settings(diarization={"pipeline": str(pipeline_dir)})).diarizer()
    assert isinstance(diarizer.pipeline, SpeakerDiarization) and not isinstance(diarizer.pipeline, _CamppDiarization)
    result = diarizer.diarize(decode_audio(str(SAMPLE)).samples)
    assert len(result.speakers) == 2 and set(result.centroids) == set(result.speakers)
    der = DiarizationErrorRate(collar=0.0, skip_overlap=False)(
        read_rttm(DATA / "diarization" / "sample.rttm"), hypothesis(result.regions, {}))
    assert der < 0.08, der
    vector = diarizer.embed(read_wav(SAMPLE)[11 * 16000 : 14 * 16000])
    assert vector.shape == (192,) and abs(np.linalg.norm(vector) - 1) < 1e-6


@pytest.fixture(scope="module")
def named(pipeline_dir, tmp_path_factory):
    """Two LibriSpeech readers taking turns, diarized through the server with the pipeline directory, one of
    them enrolled with a clip of another sentence of hers (1998-15444-0004, not in the mix). Returns the
    segments and, per reader, the seconds of her/his turns covered by segments and by segments named "sonja"."""
    from openai import OpenAI

    from tests.conftest import start_server, stop_server
    from tests.diarization_scoring import read_rttm

    mix = shared("diarization/constructed/mix_2spk_mf.wav")
    enrolment = shared("diarization/constructed/refs/LS1998_ref1.flac")
    turns = read_rttm(mix.with_suffix(".rttm"))
    log = tmp_path_factory.mktemp("pipeline_server") / "server.log"
    proc, url = start_server({"OYEZ_PRELOAD": "[]", "OYEZ_DIARIZATION_PIPELINE": str(pipeline_dir)}, log)
    try:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=900)
        with mix.open("rb") as fh:
            result = client.audio.transcriptions.create(
                model="gpt-4o-transcribe-diarize", file=fh, response_format="diarized_json",
                extra_body={"known_speaker_names": ["sonja"],
                            "known_speaker_references": ["data:audio/flac;base64,"
                                                         + base64.b64encode(enrolment.read_bytes()).decode()]},
            )
    finally:
        stop_server(proc)
    assert "diarization pipeline (" + str(pipeline_dir) in log.read_text()
    segments = result.model_dump()["segments"]
    covered = {"LS1998": 0.0, "LS1688": 0.0}
    as_sonja = {"LS1998": 0.0, "LS1688": 0.0}
    for s in segments:
        for turn, _, reader in turns.itertracks(yield_label=True):
            overlap = max(0.0, min(s["end"], turn.end) - max(s["start"], turn.start))
            covered[reader] += overlap
            as_sonja[reader] += overlap if s["speaker"] == "sonja" else 0.0
    return segments, covered, as_sonja


def test_the_server_diarizes_with_it_and_names_a_known_speaker(named):
    segments, covered, as_sonja = named
    assert_timeline(segments, 41.0)
    assert {s["speaker"] for s in segments} == {"sonja", "A"}
    assert as_sonja["LS1998"] >= 0.75 * covered["LS1998"], (as_sonja, covered)  # her speech carries her name


def test_the_other_reader_does_not_get_her_name(named):
    """Found with an enrolment clip from outside the mix (issue 18): 5.4 s of the other reader's 11.3 s used to be
    named sonja too. Since each turn moves to the cluster its own voice is closest to (issue 19, round 4), none is
    (0.0 s of his 13.8 s on 2026-12-07; with OYEZ_DIARIZATION__TURN_REASSIGN_MIN_S=0 the test fails again)."""
    _, covered, as_sonja = named
    assert as_sonja["LS1688"] <= 0.25 * covered["LS1688"], (as_sonja, covered)
