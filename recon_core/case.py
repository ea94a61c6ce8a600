"""The federated client: model + front end + one utterance -> the gradient it shares with the server."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recon_core.ctc import ctc_loss
from recon_core.data import Utterance
from recon_core.errors import InputError
from recon_core.features import FrontEnd
from recon_core.models.base import ReconModel
from recon_core.models.functional import Params, batch_norm_statistics, probe, restart_params
from recon_core.text import min_ctc_frames


class InfeasibleClip(InputError):
    """The transcript needs more CTC frames than the model outputs for this clip."""


def select_layers(model: ReconModel, layers: str | tuple[str, ...]) -> tuple[str, ...]:
    """`output` (what the original matched), `all`, or explicit parameter names (prefixes allowed)."""
    names = tuple(n for n, _ in model.named_parameters())
    if layers == "output":
        return model.output_layer
    if layers == "all":
        return names
    wanted = (layers,) if isinstance(layers, str) else layers
    chosen = []
    for w in wanted:
        hits = [n for n in names if n == w or n.startswith(w + ".")]
        if not hits:
            raise InputError(f"layer {w!r} is not a parameter of this model; choose output, all, or from: "
                             f"{', '.join(names)}")
        chosen.extend(h for h in hits if h not in chosen)
    return tuple(chosen)


def parameter_gradients(
    model: ReconModel,
    params: Params,
    names: tuple[str, ...],
    x: torch.Tensor,
    labels: torch.Tensor,
    bn_train: bool,
    create_graph: bool,
) -> list[torch.Tensor]:
    """Per-restart gradients (R, *shape) of CTC(model(x_r), y) w.r.t. the named per-restart weights.

    The losses of the restarts are summed: each depends only on its own weight copy, so the gradient of
    the sum w.r.t. copy r is restart r's gradient.
    """
    log_probs = model.functional(params, x, bn_train=bn_train)
    r, t = log_probs.shape[:2]
    targets = labels.unsqueeze(0).expand(r, -1)
    lengths_in = torch.full((r,), t, dtype=torch.long, device=x.device)
    lengths_out = torch.full((r,), labels.numel(), dtype=torch.long, device=x.device)
    loss = ctc_loss(log_probs, targets, lengths_in, lengths_out).sum()
    return list(torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph))


@dataclass
class Case:
    """What the attacker holds: the model, the transcript and the client's gradient (and, to score, the truth)."""

    utt: Utterance
    model: ReconModel
    front_end: FrontEnd
    x_true: torch.Tensor  # (T, F) standardised features of the client's utterance
    labels: torch.Tensor  # (S,) class indices
    names: tuple[str, ...]  # parameters whose gradient is matched
    target: list[torch.Tensor]  # the client's gradient of those parameters, (*shape) each
    bn_stats: dict[str, torch.Tensor]  # each batch norm's batch mean / unbiased variance on the client's batch, (1, C)

    @property
    def device(self) -> torch.device:
        return self.x_true.device


def build_case(
    model: ReconModel,
    front_end: FrontEnd,
    utt: Utterance,
    layers: str | tuple[str, ...],
    device: torch.device,
) -> Case:
    """Compute the client's features and shared gradient (a training step in train mode, batch size 1)."""
    x_true = front_end.standardise(front_end.raw(utt.load())).to(device)
    labels = torch.tensor(utt.labels, dtype=torch.long, device=device)
    needed, available = min_ctc_frames(utt.labels), model.output_frames(x_true.shape[0])
    if needed > available:
        raise InfeasibleClip(f"clip {utt.utt_id}: transcript needs {needed} CTC frames, the model outputs "
                             f"{available}")
    names = select_layers(model, layers)
    params = restart_params(dict(model.named_parameters()), 1, names)
    with probe() as seen:
        grads = parameter_gradients(model, params, names, x_true.unsqueeze(0), labels, bn_train=True,
                                    create_graph=False)
    return Case(utt, model, front_end, x_true, labels, names, [g[0].detach() for g in grads],
                batch_norm_statistics(seen))
