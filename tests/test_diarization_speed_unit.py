"""The diarizer's two speed measures: the segmentation model's first layer shared between windows, and
torch threads sized by the speech decoding that runs beside a diarization (engines/diarization/).

Figures are in docs/diarization-evaluation.md (`scripts/eval_diarization --long-minutes`); these tests
check that the shared layer computes what pyannote's own forward computes, and that the threads follow
the decoding count during a run.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

pytest.importorskip("pyannote.audio")

import torch  # noqa: E402

from engines.audio import decode_audio  # noqa: E402
from engines.parallelism import available_cores  # noqa: E402
from tests.helpers import DATA  # noqa: E402

STEP = 16000  # pyannote's 1 s step at 16 kHz
WINDOW = 160000  # segmentation-3.0's 10 s window


@pytest.fixture(scope="module")
def segmentation():
    from pyannote.audio import Model

    from engines.bundled import diarization_weights

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Model.from_pretrained(str(diarization_weights().segmentation)).eval()


@pytest.fixture(scope="module")
def windows():
    """Consecutive 10 s windows, 1 s apart, of pyannote's sample call (real speech), as pyannote cuts them."""
    samples = torch.from_numpy(decode_audio(str(DATA / "diarization" / "sample.wav")).samples)
    return samples[None].unfold(1, WINDOW, STEP)[0][:, None]  # (windows, 1, samples)


def _shared(model):
    from engines.diarization.segmentation import share_first_layer

    shared = copy.deepcopy(model)
    share_first_layer(shared.sincnet, STEP)
    return shared


def test_shared_first_layer_gives_pyannotes_scores(segmentation, windows):
    from engines.diarization.segmentation import _shared_first_layer

    shared = _shared(segmentation)
    batch = windows[:12]
    with torch.inference_mode():
        assert _shared_first_layer(shared.sincnet, batch, STEP) is not None  # the shared path, not the fallback
        expected, got = segmentation(batch), shared(batch)
        expected_features, got_features = segmentation.sincnet(batch), shared.sincnet(batch)
    assert got.shape == expected.shape == (12, 589, 7)
    # float rounding only: the convolution runs over the stretch instead of window by window
    assert float((got_features - expected_features).abs().max()) <= 1e-4 * float(expected_features.abs().max())
    assert float((got - expected).abs().max()) < 1e-3
    # the powerset class each frame takes is the same (a near tie may flip, no more)
    assert float((got.argmax(-1) != expected.argmax(-1)).float().mean()) < 1e-3


def test_windows_that_are_not_consecutive_take_pyannotes_path(segmentation, windows):
    from engines.diarization.segmentation import _shared_first_layer

    shared = _shared(segmentation)
    for batch in (windows[[0, 2, 5]], windows[:1], torch.flip(windows[:4], dims=[0])):
        with torch.inference_mode():
            assert _shared_first_layer(shared.sincnet, batch, STEP) is None
            assert torch.equal(shared(batch), segmentation(batch))


@pytest.fixture(scope="module")
def diarizer_with_counter():
    from engines.config import DiarizerConfig
    from engines.diarization.pipeline import PyannoteDiarizer

    state = {"decoding": 0, "polls": 0}

    def others_decoding() -> int:
        state["polls"] += 1
        return state["decoding"]

    return PyannoteDiarizer(DiarizerConfig(), others_decoding=others_decoding), state


@pytest.mark.parametrize("decoding", [0, 2])
def test_threads_follow_the_decoding_beside_a_diarization(diarizer_with_counter, decoding):
    diarizer, state = diarizer_with_counter
    samples = decode_audio(str(DATA / "diarization" / "sample.wav")).samples[: 16000 * 40]
    state.update(decoding=decoding, polls=0)
    result = diarizer.diarize(samples)
    assert result.speakers  # it diarized
    # polled between the steps of the run (segmentation batches, embedding chunks), not once
    assert state["polls"] > 20
    assert torch.get_num_threads() == (available_cores() if decoding == 0 else 1)


def test_fixed_threads_are_kept():
    from engines.config import DiarizerConfig
    from engines.diarization.pipeline import PyannoteDiarizer

    diarizer = PyannoteDiarizer(DiarizerConfig(threads=1), others_decoding=lambda: 0)
    diarizer.diarize(np.zeros(16000 * 12, dtype=np.float32))
    assert torch.get_num_threads() == 1


def test_the_registry_counts_requests_decoding_speech():
    """What the diarizer polls: requests decoding on any loaded Whisper engine, from start to the stream's end."""
    from server.app import build_registry
    from server.settings import Settings
    from engines.types import TranscribeOptions

    registry = build_registry(Settings())
    assert registry.decoding() == 0
    with registry.lease("whisper-1") as engine:
        stream = engine.transcribe(decode_audio(str(DATA / "diarization" / "sample.wav")), TranscribeOptions())
        assert registry.decoding() == 1
        text = " ".join(segment.text for segment in stream)
        assert registry.decoding() == 0
    assert len(text.split()) > 20  # it transcribed the call
