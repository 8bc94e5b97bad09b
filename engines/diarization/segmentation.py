"""The segmentation model's first layer, computed once per stretch of audio instead of once per window.

pyannote slides segmentation-3.0 over the audio in 10 s windows with a 1 s step, so every second
of audio goes through the model ten times. The model starts with SincNet: an instance norm of the
waveform, then 80 band-pass filters of 251 taps at stride 10, the costliest convolution of the
model. That convolution is linear and the windows overlap, so for a batch of consecutive windows
it is run once over the stretch they cover and each window takes its slice; the instance norm is a
per-window scale and shift, applied to the slice afterwards:

    filters * ((x - mean) / sqrt(var + eps) * gamma + beta)
        = gamma / sqrt(var + eps) * (filters * x - mean * sum(filters)) + beta * sum(filters)

The result equals pyannote's own forward up to float rounding (tests/test_diarization_speed_unit.py);
a batch whose windows are not consecutive steps of the audio takes pyannote's own path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def share_first_layer(sincnet: torch.nn.Module, step_samples: int) -> None:
    """Make `sincnet` (pyannote's SincNet block) compute its first convolution once per batch of windows
    that are `step_samples` apart."""
    original = sincnet.forward

    def forward(waveforms: torch.Tensor) -> torch.Tensor:
        shared = _shared_first_layer(sincnet, waveforms, step_samples)
        if shared is None:
            return original(waveforms)
        return _after_first_layer(sincnet, shared)

    sincnet.forward = forward  # an instance attribute: nn.Module.__call__ calls it in place of the class's


def _shared_first_layer(sincnet, waveforms: torch.Tensor, step: int) -> torch.Tensor | None:
    """The first convolution's output per window (batch, 80, frames), or None when windows are not consecutive."""
    encoder, norm = sincnet.conv1d[0], sincnet.wav_norm1d
    batch, channels, length = waveforms.shape
    stride = encoder.stride
    if (batch < 2 or channels != 1 or step % stride or not 0 < step < length or encoder.padding != 0
            or norm.track_running_stats or not norm.affine):
        return None
    if not torch.equal(waveforms[1:, :, : length - step], waveforms[:-1, :, step:]):
        return None
    stretch = torch.cat([waveforms[0, 0], waveforms[1:, 0, length - step :].reshape(-1)])
    full = encoder(stretch[None, None])[0]  # (80, frames of the stretch)
    frames = (length - encoder.filterbank.kernel_size) // stride + 1
    windows = full.unfold(-1, frames, step // stride).permute(1, 0, 2)  # (batch, 80, frames)
    filter_sums = encoder.get_filters().sum(dim=-1)[:, 0]  # (80,)
    var, mean = torch.var_mean(waveforms[:, 0], dim=-1, unbiased=False)  # (batch,)
    scale = norm.weight[0] / torch.sqrt(var + norm.eps)
    shift = (norm.bias[0] - scale * mean)[:, None, None] * filter_sums[None, :, None]  # (batch, 80, 1)
    return torch.addcmul(shift, windows, scale[:, None, None])  # one pass over the (batch, 80, frames) output


def _after_first_layer(sincnet, outputs: torch.Tensor) -> torch.Tensor:
    """The rest of pyannote's SincNet.forward, from the first convolution's output on."""
    for c, (conv1d, pool1d, norm1d) in enumerate(zip(sincnet.conv1d, sincnet.pool1d, sincnet.norm1d)):
        if c == 0:
            outputs = outputs.abs_()
        else:
            outputs = conv1d(outputs)
        outputs = F.leaky_relu(norm1d(pool1d(outputs)))
    return outputs
