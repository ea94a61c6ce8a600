"""DeepSpeech 1: MFCC with context -> 3 dense -> bidirectional recurrence -> dense -> 29 classes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from recon_core.models.base import ReconModel
from recon_core.models.functional import Params, bidirectional, clipped_relu, context_window, linear
from recon_core.text import N_CLASSES


class DS1(ReconModel):
    """The original attack's DS1: BiLSTM with concatenated directions; `use_relu=False` as it was built.

    As in Mozilla's DeepSpeech the third dense layer is twice as wide as the others (n_hidden_3 =
    2 * n_cell_dim): only that layout gives the original's 122.7M parameters at n_hidden = 2048.

    Without the clipped ReLU the network is linear up to the LSTM, which is the setting the published
    DS1 numbers were measured on.
    """

    def __init__(self, n_mfcc: int = 26, n_context: int = 9, n_hidden: int = 2048, use_relu: bool = False):
        super().__init__()
        self.n_features, self.n_context, self.use_relu = n_mfcc, n_context, use_relu
        n_input = (2 * n_context + 1) * n_mfcc
        self.fc1 = nn.Linear(n_input, n_hidden)
        self.fc2 = nn.Linear(n_hidden, n_hidden)
        self.fc3 = nn.Linear(n_hidden, 2 * n_hidden)
        self.lstm = nn.LSTM(2 * n_hidden, n_hidden, bidirectional=True, batch_first=True)
        self.fc5 = nn.Linear(2 * n_hidden, n_hidden)
        self.out = nn.Linear(n_hidden, N_CLASSES)
        self.output_layer = ("out.weight", "out.bias")

    def _dense(self, x: torch.Tensor, p: Params, name: str) -> torch.Tensor:
        y = linear(x, p[f"{name}.weight"], p[f"{name}.bias"])
        return clipped_relu(y) if self.use_relu else y

    def functional(self, p: Params, x: torch.Tensor, bn_train: bool = True) -> torch.Tensor:
        h = context_window(x, self.n_context)
        for name in ("fc1", "fc2", "fc3"):
            h = self._dense(h, p, name)
        fwd, bwd = bidirectional(h, p, "lstm.", "lstm")
        h = self._dense(torch.cat([fwd, bwd], dim=-1), p, "fc5")
        return F.log_softmax(linear(h, p["out.weight"], p["out.bias"]), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = (lambda y: F.hardtanh(y, 0.0, 20.0)) if self.use_relu else (lambda y: y)
        h = context_window(x, self.n_context)
        for layer in (self.fc1, self.fc2, self.fc3):
            h = act(layer(h))
        h, _ = self.lstm(h)
        return F.log_softmax(self.out(act(self.fc5(h))), dim=-1)


class TorchaudioDS1(ReconModel):
    """`torchaudio.models.DeepSpeech` (clipped ReLU, plain bidirectional ReLU RNN, directions summed).

    The torchaudio module is kept as is (its state_dict loads unchanged); only its forward is re-expressed
    over per-restart weights. Dropout is off: a client's dropout mask would be unknown to the attacker.
    """

    def __init__(self, n_mfcc: int = 26, n_context: int = 9, n_hidden: int = 2048):
        super().__init__()
        self.n_features, self.n_context = n_mfcc, n_context
        self.net = torchaudio.models.DeepSpeech((2 * n_context + 1) * n_mfcc, n_hidden, N_CLASSES, dropout=0.0)
        self.output_layer = ("net.out.weight", "net.out.bias")

    def functional(self, p: Params, x: torch.Tensor, bn_train: bool = True) -> torch.Tensor:
        h = context_window(x, self.n_context)
        for name in ("fc1", "fc2", "fc3"):
            h = clipped_relu(linear(h, p[f"net.{name}.fc.weight"], p[f"net.{name}.fc.bias"]))
        fwd, bwd = bidirectional(h, p, "net.bi_rnn.", "rnn_relu")
        h = clipped_relu(linear(fwd + bwd, p["net.fc4.fc.weight"], p["net.fc4.fc.bias"]))
        return F.log_softmax(linear(h, p["net.out.weight"], p["net.out.bias"]), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(context_window(x, self.n_context).unsqueeze(1))
