"""Layers as pure functions of per-restart weights.

The input carries a leading restart dimension R. A parameter whose gradient is matched carries it too:
restart r runs with its own copy of those weights. The copies are expanded views of one set of weights
(no memory), but autograd sees R separate leaves, so the parameter gradient of the summed loss is R
separate gradients in one backward pass. That is what lets R random restarts of the attack run in one
batched pass (`torch.func.vmap` cannot batch `nn.LSTM`/`nn.GRU`). Every other parameter stays one shared
tensor and the restarts go through it as an ordinary batch, which is much cheaper (a plain convolution
instead of a grouped one). The recurrences are written with matmuls so that they are differentiable
twice on every device without cuDNN.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx

Params = dict[str, torch.Tensor]

#: slope that `clipped_relu` gives saturated units in the attack's input gradient (0: the exact gradient)
_CLIP_SLOPE: ContextVar[float] = ContextVar("clip_slope", default=0.0)
#: where `probe` collects what the layers saw, and whether differentiably (None: nothing is recorded)
_PROBE: ContextVar[tuple[dict[str, list[torch.Tensor]], bool] | None] = ContextVar("probe", default=None)


@contextlib.contextmanager
def probe(differentiable: bool = False) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record what the forwards run inside saw: each train-mode batch norm's batch mean and unbiased variance
    (`<prefix>mean`, `<prefix>var`, what nn.BatchNorm folds into the running statistics a client's update
    carries) and, per restart, the fraction of clip inputs at or below 0 / at or above the clip (`clip_low`,
    `clip_high`: units whose gradient is zero) and, under each recurrent weight's name, the (R, T, D) vectors
    it multiplied at every time step (the span objective's inputs). Detached for diagnosis; `differentiable`
    keeps the graph (the attack's batch-norm statistics prior and span objective)."""
    record: dict[str, list[torch.Tensor]] = {}
    token = _PROBE.set((record, differentiable))
    try:
        yield record
    finally:
        _PROBE.reset(token)


def _probing() -> bool:
    """Whether a `probe` is listening: what it records is computed only then, never on a plain forward."""
    return _PROBE.get() is not None


def batch_norm_statistics(seen: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The batch-norm entries of what `probe` recorded in one forward (`<prefix>mean`, `<prefix>var`: (R, C)),
    without the clip fractions and recurrent inputs recorded beside them."""
    return {key: values[0] for key, values in seen.items() if key.endswith(("mean", "var"))}


def _record(key: str, value: torch.Tensor) -> None:
    record, differentiable = _PROBE.get()
    record.setdefault(key, []).append(value if differentiable else value.detach())


def restart_params(named: dict[str, torch.Tensor], restarts: int, per_restart: tuple[str, ...]) -> Params:
    """Weights for R restarts: the `per_restart` ones as R expanded views, each view a leaf that requires
    grad; the others shared and detached (the attack never differentiates w.r.t. them)."""
    out = {}
    for name, p in named.items():
        if name in per_restart:
            out[name] = p.detach().unsqueeze(0).expand(restarts, *p.shape).requires_grad_(True)
        else:
            out[name] = p.detach()
    return out


def _bias(b: torch.Tensor) -> torch.Tensor:
    """A per-restart bias (R, O) broadcast over time; a shared one (O,) broadcasts as it is."""
    return b.unsqueeze(1) if b.dim() == 2 else b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (R, T, I) @ weight^T + bias, with weight (O, I) shared or (R, O, I) per restart."""
    y = torch.matmul(x, weight.transpose(-1, -2))
    return y if bias is None else y + _bias(bias)


@contextlib.contextmanager
def surrogate_clip(slope: float) -> Iterator[None]:
    """Forwards built inside give saturated clip units the gradient `slope` in the attack's outer backward."""
    token = _CLIP_SLOPE.set(slope)
    try:
        yield
    finally:
        _CLIP_SLOPE.reset(token)


class _SurrogateClip(torch.autograd.Function):
    """min(max(x, 0), clip) whose backward is exact when it is recorded (create_graph: the matched parameter
    gradient, which must equal the client's) and leaky when it is not (the attack's final backward to the
    input). Units outside the range would otherwise pass no signal to the input that drove them there."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, clip: float, slope: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.clip, ctx.slope = clip, slope
        return x.clamp(0.0, clip)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        inside = (x > 0) & (x < ctx.clip)
        if torch.is_grad_enabled():
            return grad * inside, None, None
        return grad * torch.where(inside, 1.0, ctx.slope), None, None


def clipped_relu(x: torch.Tensor, clip: float = 20.0) -> torch.Tensor:
    """DeepSpeech's min(max(x, 0), clip); inside `surrogate_clip` with its surrogate input gradient."""
    if _probing():
        per_restart = tuple(range(1, x.dim()))
        _record("clip_low", (x <= 0).float().mean(per_restart))
        _record("clip_high", (x >= clip).float().mean(per_restart))
    slope = _CLIP_SLOPE.get()
    return F.hardtanh(x, 0.0, clip) if slope == 0 else _SurrogateClip.apply(x, clip, slope)


def context_window(x: torch.Tensor, n_context: int) -> torch.Tensor:
    """(R, T, F) -> (R, T, (2n+1) F): each frame with n frames of context each side, zero-padded."""
    r, t, f = x.shape
    padded = F.pad(x, (0, 0, n_context, n_context))
    windows = padded.unfold(1, 2 * n_context + 1, 1)  # (R, T, F, 2n+1)
    return windows.transpose(2, 3).reshape(r, t, (2 * n_context + 1) * f)


def _steps(xw: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(R, T, G) -> T views (R, 1, G). One unbind, not T slices: the backward of each slice `xw[:, t]` fills
    a zero tensor of the whole (R, T, G) (quadratic in T: 12-15 % of a batched DS1 step), while the
    backward of unbind stacks the T gradients once."""
    return xw.unsqueeze(2).unbind(1)


Tape = list[tuple[torch.Tensor, torch.Tensor]]


class _HiddenProduct(torch.autograd.Function):
    """h @ w at one time step. Its backward passes the gradient on to h and leaves the weight's to
    `_WeightGradient`: autograd would otherwise form one (R, H, G) outer product per time step and add them
    up one by one (40 % of a batched all-layer DS1 step)."""

    @staticmethod
    def forward(ctx: FunctionCtx, h: torch.Tensor, w: torch.Tensor, tape: Tape) -> torch.Tensor:
        ctx.save_for_backward(h, w)
        ctx.tape = tape
        return torch.matmul(h, w)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        h, w = ctx.saved_tensors
        ctx.tape.append((h, grad))
        return torch.matmul(grad, w.transpose(-1, -2)), None, None


class _WeightGradient(torch.autograd.Function):
    """The zero initial state, made a function of the recurrent weight: it feeds the first step, so its
    backward runs after every step's, and turns their (h, gradient) pairs into the weight's gradient with one
    matmul over time. Both backwards are plain differentiable ops on tensors that keep their history, so a
    create_graph backward stays differentiable (the attack's double backward)."""

    @staticmethod
    def forward(ctx: FunctionCtx, w: torch.Tensor, shape: tuple[int, ...], tape: Tape) -> torch.Tensor:
        ctx.tape, ctx.dims = tape, w.dim()
        return w.new_zeros(shape)

    @staticmethod
    def backward(ctx: FunctionCtx, _: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        if not ctx.tape:
            return None, None, None
        h = torch.cat([pair[0] for pair in ctx.tape], dim=-2)  # (R, T, H)
        grad = torch.cat([pair[1] for pair in ctx.tape], dim=-2)  # (R, T, G)
        ctx.tape.clear()
        weight_grad = torch.matmul(h.transpose(-1, -2), grad)
        return (weight_grad.sum(0) if ctx.dims == 2 else weight_grad), None, None


def _recurrence(w_hh: torch.Tensor, xw: torch.Tensor, hidden: int
                ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """The initial hidden state (R, 1, H) and the step's h -> h @ w_hh^T, with one weight-gradient matmul
    per pass when the weight needs a gradient."""
    w_t = w_hh.transpose(-1, -2).contiguous()  # one copy per pass, not one per time step
    shape = (xw.shape[0], 1, hidden)
    if not (w_t.requires_grad and torch.is_grad_enabled()):
        return xw.new_zeros(shape), lambda h: torch.matmul(h, w_t)
    tape: Tape = []
    return _WeightGradient.apply(w_t, shape, tape), lambda h: _HiddenProduct.apply(h, w_t, tape)


def _lstm_steps(xw: torch.Tensor, w_hh: torch.Tensor) -> torch.Tensor:
    """LSTM recurrence over time; xw (R, T, 4H) holds the input projection with both biases added."""
    hidden = xw.shape[-1] // 4
    h, hidden_product = _recurrence(w_hh, xw, hidden)
    c = xw.new_zeros(xw.shape[0], 1, hidden)
    outs = []
    for x_step in _steps(xw):
        gates = x_step + hidden_product(h)
        i, f, gg, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.cat(outs, dim=1)


def _gru_steps(xw: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor | None) -> torch.Tensor:
    """GRU recurrence (PyTorch's gate order r, z, n); b_hh stays inside the reset gate's product."""
    hidden = xw.shape[-1] // 3
    h, hidden_product = _recurrence(w_hh, xw, hidden)
    outs = []
    for x_step in _steps(xw):
        hw = hidden_product(h)
        if b_hh is not None:
            hw = hw + _bias(b_hh)
        xr, xz, xn = x_step.chunk(3, dim=-1)
        hr, hz, hn = hw.chunk(3, dim=-1)
        reset = torch.sigmoid(xr + hr)
        update = torch.sigmoid(xz + hz)
        new = torch.tanh(xn + reset * hn)
        h = (1 - update) * new + update * h
        outs.append(h)
    return torch.cat(outs, dim=1)


def _rnn_relu_steps(xw: torch.Tensor, w_hh: torch.Tensor) -> torch.Tensor:
    """Elman recurrence with ReLU (torchaudio's DeepSpeech); xw holds both biases."""
    hidden = xw.shape[-1]
    h, hidden_product = _recurrence(w_hh, xw, hidden)
    outs = []
    for x_step in _steps(xw):
        h = torch.relu(x_step + hidden_product(h))
        outs.append(h)
    return torch.cat(outs, dim=1)


def _direction(x: torch.Tensor, p: Params, prefix: str, suffix: str, cell: str) -> torch.Tensor:
    ih, hh = f"{prefix}weight_ih_l0{suffix}", f"{prefix}weight_hh_l0{suffix}"
    w_ih, w_hh = p[ih], p[hh]
    b_ih, b_hh = p.get(f"{prefix}bias_ih_l0{suffix}"), p.get(f"{prefix}bias_hh_l0{suffix}")
    if cell == "gru":
        out = _gru_steps(linear(x, w_ih, b_ih), w_hh, b_hh)
    else:
        xw = linear(x, w_ih, b_ih)
        if b_hh is not None:
            xw = xw + _bias(b_hh)
        out = _lstm_steps(xw, w_hh) if cell == "lstm" else _rnn_relu_steps(xw, w_hh)
    if _probing():
        # what each recurrent weight multiplied: the inputs, and the hidden states h_0..h_{T-2} (the zero
        # initial state adds nothing to w_hh's gradient); in this direction's own time order
        _record(ih, x)
        _record(hh, out[:, :-1])
    return out


def bidirectional(x: torch.Tensor, p: Params, prefix: str, cell: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One bidirectional layer with nn.LSTM/nn.GRU/nn.RNN parameter names under `prefix`.

    Returns the forward and backward outputs (R, T, H) separately: DS1 concatenates them, DS2 and
    torchaudio's DeepSpeech sum them.
    """
    fwd = _direction(x, p, prefix, "", cell)
    bwd = _direction(x.flip(1), p, prefix, "_reverse", cell).flip(1)
    return fwd, bwd


def batch_norm(
    x: torch.Tensor,
    p: Params,
    buffers: dict[str, torch.Tensor],
    prefix: str,
    channel_dim: int,
    train: bool,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Batch norm per restart: in train mode each restart is normalised by its own statistics.

    A client trains with batch size 1, so its statistics are those of its one utterance; the attack's
    dummy must be normalised the same way, never by statistics pooled over restarts. Running statistics
    are read (eval mode) but never written: the attack's forwards leave the model untouched.
    """
    scale, shift = p[f"{prefix}weight"], p[f"{prefix}bias"]
    shape = [1] * x.dim()
    shape[0], shape[channel_dim] = scale.shape[0] if scale.dim() == 2 else 1, x.shape[channel_dim]
    if train:
        dims = [d for d in range(1, x.dim()) if d != channel_dim]
        mean = x.mean(dims, keepdim=True)
        var = x.var(dims, keepdim=True, unbiased=False)
        if _probing():
            n = x[0].numel() // x.shape[channel_dim]
            _record(f"{prefix}mean", mean.reshape(x.shape[0], -1))
            _record(f"{prefix}var", var.reshape(x.shape[0], -1) * n / max(n - 1, 1))
    else:
        stat_shape = [1] * x.dim()
        stat_shape[channel_dim] = x.shape[channel_dim]
        mean = buffers[f"{prefix}running_mean"].view(stat_shape)
        var = buffers[f"{prefix}running_var"].view(stat_shape)
    return (x - mean) * torch.rsqrt(var + eps) * scale.view(shape) + shift.view(shape)


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> torch.Tensor:
    """x (R, C, H, W); a shared weight (O, C, kh, kw) is a plain batched convolution, a per-restart one
    (R, O, C, kh, kw) one grouped convolution."""
    if weight.dim() == 4:
        return F.conv2d(x, weight, bias, stride=stride, padding=padding)
    r, c = x.shape[:2]
    o = weight.shape[1]
    y = F.conv2d(
        x.reshape(1, r * c, *x.shape[2:]),
        weight.reshape(r * o, *weight.shape[2:]),
        None if bias is None else bias.reshape(r * o),
        stride=stride,
        padding=padding,
        groups=r,
    )
    return y.reshape(r, o, *y.shape[2:])
