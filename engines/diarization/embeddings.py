"""CAM++ speaker embeddings (3D-Speaker, Apache-2.0) as a pyannote.audio embedding model.

The network is 3D-Speaker's CAM++ (speakerlab/models/campplus), written out here because
no PyPI package exposes the module without heavy side imports; the weights are the
zh/en "common advanced" checkpoint, 192-dimensional. `CamppEmbedding` wraps it as a
pyannote `Model` so pyannote's diarization pipeline can use it as its embedding: it
takes (batch, 1, samples) waveforms and optional per-frame `weights` (the segmentation
mask of one local speaker) and keeps only the frames where that speaker is active.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio.compliance.kaldi as kaldi
from pyannote.audio.core.model import Model

from engines.types import SAMPLE_RATE

DIMENSION = 192
# Fewer selected fbank frames than this (0.2 s) carry no usable voice: the embedding is NaN,
# which pyannote's clustering skips.
MIN_FRAMES = 20
FRAME_RATE = 50  # trunk frames per second: 10 ms fbank hop, halved by the stride-2 TDNN


def _bn_relu(channels: int) -> nn.Sequential:
    seq = nn.Sequential()
    seq.add_module("batchnorm", nn.BatchNorm1d(channels))
    seq.add_module("relu", nn.ReLU(inplace=True))
    return seq


class _BasicResBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _FCM(nn.Module):
    def __init__(self, m_channels: int = 32, feat_dim: int = 80):
        super().__init__()
        self.conv1 = nn.Conv2d(1, m_channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m_channels)
        self.layer1 = nn.Sequential(_BasicResBlock(m_channels, m_channels, 2), _BasicResBlock(m_channels, m_channels, 1))
        self.layer2 = nn.Sequential(_BasicResBlock(m_channels, m_channels, 2), _BasicResBlock(m_channels, m_channels, 1))
        self.conv2 = nn.Conv2d(m_channels, m_channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(m_channels)
        self.out_channels = m_channels * (feat_dim // 8)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        out = self.layer2(self.layer1(out))
        out = F.relu(self.bn2(self.conv2(out)))
        return out.reshape(out.shape[0], out.shape[1] * out.shape[2], out.shape[3])


class _TDNNLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, dilation=1):
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.linear = nn.Conv1d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=False)
        self.nonlinear = _bn_relu(out_channels)

    def forward(self, x):
        return self.nonlinear(self.linear(x))


class _CAMLayer(nn.Module):
    def __init__(self, bn_channels, out_channels, kernel_size, dilation, reduction=2):
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.linear_local = nn.Conv1d(bn_channels, out_channels, kernel_size, 1, padding, dilation, bias=False)
        self.linear1 = nn.Conv1d(bn_channels, bn_channels // reduction, 1)
        self.relu = nn.ReLU(inplace=True)
        self.linear2 = nn.Conv1d(bn_channels // reduction, out_channels, 1)

    def forward(self, x):
        y = self.linear_local(x)
        context = x.mean(-1, keepdim=True) + self._seg_pooling(x)
        return y * torch.sigmoid(self.linear2(self.relu(self.linear1(context))))

    @staticmethod
    def _seg_pooling(x, seg_len: int = 100):
        seg = F.avg_pool1d(x, kernel_size=seg_len, stride=seg_len, ceil_mode=True)
        return seg.unsqueeze(-1).expand(*seg.shape, seg_len).reshape(*seg.shape[:-1], -1)[..., : x.shape[-1]]


class _CAMDenseTDNNLayer(nn.Module):
    def __init__(self, in_channels, out_channels, bn_channels, kernel_size, dilation):
        super().__init__()
        self.nonlinear1 = _bn_relu(in_channels)
        self.linear1 = nn.Conv1d(in_channels, bn_channels, 1, bias=False)
        self.nonlinear2 = _bn_relu(bn_channels)
        self.cam_layer = _CAMLayer(bn_channels, out_channels, kernel_size, dilation)

    def forward(self, x):
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class _CAMDenseTDNNBlock(nn.ModuleList):
    def __init__(self, num_layers, in_channels, out_channels, bn_channels, kernel_size, dilation):
        super().__init__()
        for i in range(num_layers):
            layer = _CAMDenseTDNNLayer(in_channels + i * out_channels, out_channels, bn_channels, kernel_size, dilation)
            self.add_module(f"tdnnd{i + 1}", layer)

    def forward(self, x):
        for layer in self:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class _TransitLayer(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.nonlinear = _bn_relu(in_channels)
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)

    def forward(self, x):
        return self.linear(self.nonlinear(x))


class _StatsPool(nn.Module):
    def forward(self, x):
        return torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=True)], dim=-1)


class _DenseLayer(nn.Module):
    """Embedding layer: a 1x1 convolution and a batch norm without affine terms (no ReLU)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.nonlinear = nn.Sequential()
        self.nonlinear.add_module("batchnorm", nn.BatchNorm1d(out_channels, affine=False))

    def forward(self, x):
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


class CAMPPlus(nn.Module):
    """3D-Speaker's CAM++ network: (batch, frames, 80) mean-normalised fbank -> (batch, 192)."""

    def __init__(self, feat_dim=80, embedding_size=DIMENSION, growth_rate=32, bn_size=4, init_channels=128):
        super().__init__()
        self.head = _FCM(feat_dim=feat_dim)
        channels = self.head.out_channels
        self.xvector = nn.Sequential(OrderedDict([("tdnn", _TDNNLayer(channels, init_channels, 5, stride=2))]))
        channels = init_channels
        for i, (num_layers, kernel_size, dilation) in enumerate([(12, 3, 1), (24, 3, 2), (16, 3, 2)]):
            block = _CAMDenseTDNNBlock(num_layers, channels, growth_rate, bn_size * growth_rate, kernel_size, dilation)
            self.xvector.add_module(f"block{i + 1}", block)
            channels += num_layers * growth_rate
            self.xvector.add_module(f"transit{i + 1}", _TransitLayer(channels, channels // 2))
            channels //= 2
        self.xvector.add_module("out_nonlinear", _bn_relu(channels))
        self.xvector.add_module("stats", _StatsPool())
        self.xvector.add_module("dense", _DenseLayer(channels * 2, embedding_size))

    def forward(self, feats):
        return self.xvector(self.head(feats.permute(0, 2, 1)))

    def trunk(self, feats):
        """Frame-level features before pooling: (batch, frames, 80) -> (batch, 512, frames / 2)."""
        x = self.head(feats.permute(0, 2, 1))
        for name, module in self.xvector.named_children():
            if name == "stats":
                return x
            x = module(x)
        raise AssertionError("no stats pooling layer")

    def pooled_embedding(self, frames: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Embedding from trunk features (channels, T) pooled with per-frame weights (T,).

        With all weights equal to one this is exactly `forward` (mean and unbiased std).
        """
        total = weights.sum()
        mean = (frames * weights).sum(dim=-1) / total
        var = (weights * (frames - mean[:, None]) ** 2).sum(dim=-1) / torch.clamp(total - 1, min=1.0)
        stats = torch.cat([mean, var.clamp(min=0).sqrt()])[None]
        return self.xvector.dense(stats)[0]


def fbank(waveform: torch.Tensor) -> torch.Tensor:
    """80-bin Kaldi fbank of a (samples,) float waveform in [-1, 1], 10 ms hop, as 3D-Speaker computes it."""
    return kaldi.fbank(waveform.unsqueeze(0), num_mel_bins=80, sample_frequency=SAMPLE_RATE, dither=0.0)


class CamppEmbedding(Model):
    """pyannote `Model` around CAM++, so `SpeakerDiarization(embedding=CamppEmbedding(...))` works."""

    def __init__(self, checkpoint: str | None = None):
        super().__init__(sample_rate=SAMPLE_RATE, num_channels=1)
        self.network = CAMPPlus()
        if checkpoint is not None:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            self.network.load_state_dict(state)
        self.network.eval()

    @property
    def dimension(self) -> int:
        return DIMENSION

    def forward(self, waveforms: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        out = torch.full((waveforms.shape[0], DIMENSION), float("nan"), device=waveforms.device)
        for i, wave in enumerate(waveforms[:, 0]):
            feats = fbank(wave)
            if weights is not None:
                # Map the segmentation frames onto fbank frames and keep the active ones.
                w = F.interpolate(weights[i][None, None], size=feats.shape[0], mode="nearest")[0, 0]
                feats = feats[w > 0.5]
            if feats.shape[0] < MIN_FRAMES:
                continue
            feats = feats - feats.mean(dim=0, keepdim=True)
            out[i] = self.network(feats.unsqueeze(0))[0]
        return out
