"""DeepSpeech 2: spectrogram -> 2 conv (BN, Hardtanh(0, 20)) -> bidirectional GRUs -> BN -> FC."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recon_core.models.base import ReconModel
from recon_core.models.functional import Params, batch_norm, bidirectional, clipped_relu, conv2d, linear
from recon_core.text import N_CLASSES

# (time, frequency) kernel, stride and padding of the two convolutions; the second halves the time axis.
# No padding in frequency: 257 bins -> 109 -> 45, the only layout that gives the original 41.7M parameters.
CONVS = (((11, 41), (1, 2), (5, 0)), ((11, 21), (2, 2), (5, 0)))


def _conv_out(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - kernel) // stride + 1


class DS2(ReconModel):
    """The original DS2: GRUs without bias with directions summed, batch norm before GRUs 2.. and the FC."""

    def __init__(self, n_freq: int = 257, channels: int = 32, n_hidden: int = 800, n_layers: int = 5):
        super().__init__()
        self.n_features = n_freq
        (k1, s1, p1), (k2, s2, p2) = CONVS
        self.conv1 = nn.Conv2d(1, channels, k1, s1, p1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, k2, s2, p2)
        self.bn2 = nn.BatchNorm2d(channels)
        freq = n_freq
        for kernel, stride, padding in CONVS:
            freq = _conv_out(freq, kernel[1], stride[1], padding[1])
        sizes = [channels * freq] + [n_hidden] * (n_layers - 1)
        self.grus = nn.ModuleList(nn.GRU(n, n_hidden, bias=False, bidirectional=True) for n in sizes)
        self.bns = nn.ModuleList(nn.BatchNorm1d(n_hidden) for _ in range(n_layers - 1))
        self.bn_out = nn.BatchNorm1d(n_hidden)
        self.fc = nn.Linear(n_hidden, N_CLASSES, bias=False)
        self.output_layer = ("fc.weight",)

    def output_frames(self, n_frames: int) -> int:
        for kernel, stride, padding in CONVS:
            n_frames = _conv_out(n_frames, kernel[0], stride[0], padding[0])
        return n_frames

    def functional(self, p: Params, x: torch.Tensor, bn_train: bool = True) -> torch.Tensor:
        buffers = self.buffer_dict()
        h = x.unsqueeze(1)  # (R, 1, T, F)
        for i, (_, stride, padding) in enumerate(CONVS, start=1):
            h = conv2d(h, p[f"conv{i}.weight"], p[f"conv{i}.bias"], stride, padding)
            h = clipped_relu(batch_norm(h, p, buffers, f"bn{i}.", channel_dim=1, train=bn_train))
        r, c, t, f = h.shape
        h = h.permute(0, 2, 1, 3).reshape(r, t, c * f)
        for i in range(len(self.grus)):
            if i > 0:
                h = batch_norm(h, p, buffers, f"bns.{i - 1}.", channel_dim=2, train=bn_train)
            fwd, bwd = bidirectional(h, p, f"grus.{i}.", "gru")
            h = fwd + bwd
        h = batch_norm(h, p, buffers, "bn_out.", channel_dim=2, train=bn_train)
        return F.log_softmax(linear(h, p["fc.weight"]), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(1)
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2)):
            h = clipped_relu(bn(conv(h)))
        b, c, t, f = h.shape
        h = h.permute(0, 2, 1, 3).reshape(b, t, c * f)
        for i, gru in enumerate(self.grus):
            if i > 0:
                h = self.bns[i - 1](h.transpose(1, 2)).transpose(1, 2)
            out, _ = gru(h.transpose(0, 1))
            h = out.transpose(0, 1)
            h = h[..., : gru.hidden_size] + h[..., gru.hidden_size :]
        h = self.bn_out(h.transpose(1, 2)).transpose(1, 2)
        return F.log_softmax(self.fc(h), dim=-1)
