"""The gradient-matching attack: R seeded restarts optimised together in one batched pass.

One screen of logic: `Attack.losses` is the objective (distance of the dummy's gradient to the client's,
or the span residual of `recon_core.span`, plus a prior), `Attack.run` the optimiser loop with its
schedule, early stop and checkpoints. Restarts never interact: Adam is elementwise and each restart owns a
copy of the weights (or, for the span objective, only its own inputs), so restart r of a batched run
follows the same trajectory as a run of that restart alone.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from recon_core.case import Case, parameter_gradients
from recon_core.config import AttackConfig
from recon_core.distances import DISTANCES
from recon_core.models.functional import probe, restart_params, surrogate_clip
from recon_core.regularisers import REGULARISERS, batch_norm_gap
from recon_core.span import span_bases, span_loss

#: iterations between the original's lr halvings
STEP_EVERY = 250
#: std of the noise around the CMVN mean of the `mean` init: restarts differ, yet all start near average speech
MEAN_INIT_NOISE = 0.1


def lr_at(iteration: int, base_lr: float, schedule: str, max_iter: int) -> float:
    """Learning rate at an iteration: `step` halves every 250 (the original), `cosine` anneals to 0,
    `staircase` divides by 10 at 3/8, 5/8 and 7/8 of the budget (inverting gradients)."""
    if schedule == "step":
        return base_lr * 0.5 ** (iteration // STEP_EVERY)
    if schedule == "cosine":
        return base_lr * 0.5 * (1 + math.cos(math.pi * iteration / max_iter))
    passed = sum(iteration >= max_iter * k / 8 for k in (3, 5, 7))
    return base_lr * 0.1**passed


def restart_seeds(cfg: AttackConfig) -> list[int]:
    return [cfg.seed + r for r in range(cfg.n_seeds)]


def initial_guess(shape: tuple[int, int], init: str, seeds: list[int], device: torch.device) -> torch.Tensor:
    """(R, T, F) starts, each drawn from its own generator so a restart's start depends on its seed alone."""
    starts = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        if init == "uniform":
            starts.append(torch.rand(shape, generator=gen) * 2 - 1)
        elif init == "gaussian":
            starts.append(torch.randn(shape, generator=gen))
        elif init == "mean":
            starts.append(MEAN_INIT_NOISE * torch.randn(shape, generator=gen))
        else:
            starts.append(torch.zeros(shape))
    return torch.stack(starts).to(device)


def coarse_shape(shape: tuple[int, int], every_t: int, every_f: int) -> tuple[int, int]:
    """Grid of the optimised values: one per `every` frames/bins, both ends included."""
    return tuple(-(-(n - 1) // k) + 1 if k > 1 else n for n, k in zip(shape, (every_t, every_f), strict=True))


def upsample(z: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(R, t, f) grid -> (R, T, F) features, linear between grid points (identity when the sizes agree)."""
    if tuple(z.shape[1:]) == tuple(shape):
        return z
    return torch.nn.functional.interpolate(z.unsqueeze(1), size=shape, mode="bilinear", align_corners=True).squeeze(1)


def start_values(shape: tuple[int, int], cfg: AttackConfig, seeds: list[int], device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where restarts start: the optimised values (R, t, f) on cfg's grid and the features (R, T, F) they
    stand for. Depends on (init, grid, seeds) alone, so a start can be rebuilt from a run's config."""
    z0 = initial_guess(coarse_shape(shape, cfg.coarse_time, cfg.coarse_freq), cfg.init, seeds, device)
    return z0, upsample(z0, shape)


def top_grad_indices(target: list[torch.Tensor], fraction: float) -> list[torch.Tensor | None]:
    """Flat indices of the entries matched: the top `fraction` by magnitude of each weight matrix, all of
    each bias (as the original's --top_grad_percentage). None stands for all entries: an index of every
    entry would cost a gather and, in the backward, a scatter per layer and step for nothing."""
    keep: list[torch.Tensor | None] = []
    for t in target:
        flat = t.reshape(-1)
        k = max(1, int(round(fraction * flat.numel())))
        keep.append(None if t.dim() < 2 or k >= flat.numel() else flat.abs().topk(k).indices.sort().values)
    return keep


def _kept(flat: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """The matched entries of flattened gradients (..., N)."""
    return flat if index is None else flat[..., index]


@dataclass
class AttackState:
    """Everything needed to continue an attack exactly where it stopped."""

    x: torch.Tensor  # (R, t, f) current optimised values (the features themselves unless coarse)
    x_init: torch.Tensor  # (R, T, F) starting features
    best_x: torch.Tensor  # (R, T, F)
    best_loss: torch.Tensor  # (R,)
    since_best: torch.Tensor  # (R,) steps without a new best
    active: torch.Tensor  # (R,) bool
    iterations: torch.Tensor  # (R,) steps taken
    stop_reason: list[str]
    history: list[torch.Tensor] = field(default_factory=list)  # (R,) matching loss per step
    iteration: int = 0
    optimizer: dict | None = None
    seconds: float = 0.0  # wall time spent on this sample, across resumptions

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict, device: torch.device) -> AttackState:
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in d.items()}
        moved["history"] = [h.to(device) for h in d["history"]]
        return cls(**moved)


StepHook = Callable[[int, AttackState], None]


class Attack:
    """Gradient matching against one case with one attack config."""

    def __init__(self, case: Case, cfg: AttackConfig, base_lr: float):
        self.case, self.cfg, self.base_lr = case, cfg, base_lr
        # what the objective compares against: the span objective the row spaces of the client's gradients, the
        # gradient objective a flat copy of their kept entries (as large as the matched layers: not held for span)
        self.bases: dict[str, torch.Tensor] = {}
        self.keep: list[torch.Tensor | None] = []
        self.target_flat: torch.Tensor | None = None
        if cfg.objective == "span":
            self.bases = span_bases(case.names, case.target)
        else:
            self.keep = top_grad_indices(case.target, cfg.top_grad_percentage)
            self.target_flat = torch.cat([_kept(t.reshape(-1), k) for t, k in zip(case.target, self.keep, strict=True)])
        self.distance = DISTANCES[cfg.distance]
        self.prior = REGULARISERS[cfg.regulariser]
        self.shape = tuple(case.x_true.shape)
        self.grid = coarse_shape(self.shape, cfg.coarse_time, cfg.coarse_freq)

    def features(self, z: torch.Tensor) -> torch.Tensor:
        """The dummy features (R, T, F) that the optimised values z stand for."""
        return upsample(z, self.shape)

    def _params(self, restarts: int) -> dict[str, torch.Tensor]:
        # the span objective needs no parameter gradient: every restart shares the weights
        per_restart = () if self.cfg.objective == "span" else self.case.names
        return restart_params(dict(self.case.model.named_parameters()), restarts, per_restart)

    def losses(self, z: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(matching loss, matching loss + prior), each (R,), differentiable w.r.t. the optimised values z."""
        c, cfg = self.case, self.cfg
        x = self.features(z)
        span = cfg.objective == "span"
        listen = probe(differentiable=True) if span or cfg.bn_stats_weight > 0 else contextlib.nullcontext({})
        with surrogate_clip(cfg.clip_slope), listen as seen:
            if span:
                c.model.functional(params, x, bn_train=cfg.bn_mode == "train")
                match = span_loss(seen, self.bases)
            else:
                grads = parameter_gradients(c.model, params, c.names, x, c.labels, cfg.bn_mode == "train",
                                            create_graph=True)
                r = x.shape[0]
                flat = torch.cat([_kept(g.reshape(r, -1), k) for g, k in zip(grads, self.keep, strict=True)], dim=1)
                match = self.distance(flat, self.target_flat, cfg.l2_weight)
        total = match + cfg.reg_weight * self.prior(x)
        if cfg.bn_stats_weight > 0:
            total = total + cfg.bn_stats_weight * batch_norm_gap(seen, c.bn_stats)
        return match, total

    def start(self, seeds: list[int]) -> AttackState:
        z0, x0 = start_values(self.shape, self.cfg, seeds, self.case.device)
        r = len(seeds)
        return AttackState(
            x=z0.clone(),
            x_init=x0.clone(),
            best_x=x0.clone(),
            best_loss=torch.full((r,), math.inf, device=x0.device),
            since_best=torch.zeros(r, dtype=torch.long, device=x0.device),
            active=torch.ones(r, dtype=torch.bool, device=x0.device),
            iterations=torch.zeros(r, dtype=torch.long, device=x0.device),
            stop_reason=["max_iter"] * r,
        )

    def run(self, state: AttackState, on_step: StepHook | None = None, every: int = 10) -> AttackState:
        """Optimise until max_iter or until every restart stopped; `on_step` sees the state every `every`
        steps (for progress, pruning and checkpoints) and may raise to abort."""
        cfg = self.cfg
        x = state.x.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=self.base_lr)
        if state.optimizer is not None:
            opt.load_state_dict(state.optimizer)
        params = self._params(x.shape[0])
        while state.iteration < cfg.max_iter and bool(state.active.any()):
            for group in opt.param_groups:
                group["lr"] = lr_at(state.iteration, self.base_lr, cfg.schedule, cfg.max_iter)
            match, total = self.losses(x, params)
            (grad,) = torch.autograd.grad(total.sum(), x)
            self._bookkeep(state, self.features(x.detach()), match.detach())
            grad = torch.where(state.active[:, None, None], torch.nan_to_num(grad), 0.0)
            x.grad = grad.sign() if cfg.signed_grad else grad
            before = x.detach().clone()
            opt.step()
            with torch.no_grad():
                x.copy_(torch.where(state.active[:, None, None], x, before))
            state.iteration += 1
            state.x = x.detach()
            if on_step is not None and (state.iteration % every == 0 or not bool(state.active.any())):
                state.optimizer = opt.state_dict()
                on_step(state.iteration, state)
        state.optimizer = opt.state_dict()
        return state

    def _bookkeep(self, state: AttackState, x: torch.Tensor, match: torch.Tensor) -> None:
        """Track each restart's best, then stop restarts that diverged (NaN/Inf) or plateaued."""
        active, cfg = state.active, self.cfg
        finite = torch.isfinite(match)
        improved = active & finite & (match < state.best_loss - cfg.min_delta)
        state.best_loss = torch.where(improved, match, state.best_loss)
        state.best_x = torch.where(improved[:, None, None], x, state.best_x)
        state.since_best = torch.where(improved, 0, state.since_best + 1)
        state.history.append(torch.where(active, match, torch.nan))
        state.iterations = state.iterations + active.long()
        diverged = active & ~finite
        plateaued = active & finite & (state.since_best >= cfg.patience) if cfg.patience > 0 else active & False
        for r in diverged.nonzero().flatten().tolist():
            state.stop_reason[r] = "nan"
        for r in plateaued.nonzero().flatten().tolist():
            state.stop_reason[r] = "plateau"
        state.active = active & ~diverged & ~plateaued
