"""`asr-recon diagnose ds2`: measurements of why gradient matching fails on DS2, written as a markdown report.

Each measurement is a small pure function of a Case (the client's model, clip and gradient) so that the
report, the tests and docs/ds2-failure-modes.md quote the same numbers. Quality is reported as the MAE in
the standardised spectrogram space divided by the MAE of the *uniform* random start with the same seed
(the original's mae_ratio), whatever init an attack used, so that inits are compared on one scale.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from recon_core.attack import Attack, AttackState, initial_guess, restart_seeds, upsample
from recon_core.case import Case, InfeasibleClip, build_case, parameter_gradients, select_layers
from recon_core.config import AttackConfig, DataConfig, ModelConfig
from recon_core.data import Utterance, load_selection
from recon_core.distances import cosine
from recon_core.features import front_end_for
from recon_core.linearised import Linearised, adjoint_gap, linearised_oracle
from recon_core.metrics import best_restart, mae, uniform_start_mae
from recon_core.models.base import ReconModel
from recon_core.models.functional import batch_norm_statistics, probe, restart_params
from recon_core.models.presets import build_model
from recon_core.text import min_ctc_frames

#: what nn.BatchNorm's default momentum folds of each forward into its running statistics
BN_MOMENTUM = 0.1
#: the original's early-stop patience, and a budget-scaled one (same ratio to a 1000-step budget)
PATIENCES = (100, 25)
#: the basin measurement: start at truth + BASIN_SIGMA * N(0, 1) (noise seed BASIN_SEED), Adam at BASIN_LR, cosine
BASIN_SIGMA, BASIN_SEED, BASIN_LR = 0.3, 1, 0.01
#: central-difference steps (along a unit direction) at which the oracle's Jacobian is checked against autograd
ORACLE_STEPS = (1e-2, 1e-3, 1e-4, 1e-5)


@dataclass
class Trace:
    """One attack, observed every few steps: matching loss and quality of the current and the best iterate."""

    name: str
    cfg: AttackConfig
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)  # matching loss of the best restart so far
    ratio_current: list[float] = field(default_factory=list)
    ratio_best: list[float] = field(default_factory=list)  # what a run stopped here would return
    clip_zero_grad: list[float] = field(default_factory=list)  # fraction of clip units with zero gradient
    history: list[float] = field(default_factory=list)  # per-step matching loss (best restart)
    seconds: float = 0.0
    affine: dict[str, float] = field(default_factory=dict)  # affine_fit of the returned features to the truth

    @property
    def final_ratio(self) -> float:
        return self.ratio_best[-1]


def affine_fit(x: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Least-squares truth ~ slope * x + intercept over all values, and the correlation: whether a
    reconstruction is the truth up to level and scale (slope ~ 1, correlation ~ 1) or unrelated to it (~ 0)."""
    a, b = x.reshape(-1).double(), truth.reshape(-1).double()
    cov = float(((a - a.mean()) * (b - b.mean())).mean())
    return {"slope": cov / float(a.var(correction=0)), "correlation": float(torch.corrcoef(torch.stack([a, b]))[0, 1])}


def clip_zero_grad_fraction(case: Case, x: torch.Tensor) -> float:
    """Fraction of Hardtanh(0, 20) units (both convs) outside the range, where the gradient is zero."""
    params = restart_params(dict(case.model.named_parameters()), x.shape[0], ())
    with probe() as seen, torch.no_grad():
        case.model.functional(params, x, bn_train=True)
    low, high = torch.cat(seen["clip_low"]), torch.cat(seen["clip_high"])
    return float((low + high).mean())


def traced_attack(case: Case, cfg: AttackConfig, name: str, every: int = 10) -> Trace:
    """Run an attack (learning rate from cfg or the model's original) and record a Trace every `every` steps."""
    attack = Attack(case, cfg, cfg.resolved_lr("ds2"))
    trace = Trace(name, cfg)
    denominator = uniform_start_mae(case.x_true, cfg.seed)  # every mae_ratio here is on the original's scale

    def ratio(x: torch.Tensor) -> float:
        return mae(x, case.x_true) / denominator

    def observe(iteration: int, st: AttackState) -> None:
        best = best_restart(st)
        trace.steps.append(iteration)
        trace.loss.append(float(st.best_loss[best]) if iteration else math.nan)
        trace.ratio_current.append(ratio(attack.features(st.x)[best]))
        trace.ratio_best.append(ratio(st.best_x[best]))
        trace.clip_zero_grad.append(clip_zero_grad_fraction(case, attack.features(st.x)))

    started = time.perf_counter()
    state = attack.start(restart_seeds(cfg))
    observe(0, state)
    state = attack.run(state, observe, every)
    if trace.steps[-1] != state.iteration:
        observe(state.iteration, state)
    trace.seconds = time.perf_counter() - started
    best = best_restart(state)
    trace.history = [float(h[best]) for h in state.history]
    trace.affine = affine_fit(state.best_x[best], case.x_true)
    return trace


# ---- batch norm ---------------------------------------------------------------------------------------------


def target_gradient(case: Case, x: torch.Tensor, names: tuple[str, ...], bn_train: bool,
                    model: ReconModel | None = None) -> torch.Tensor:
    """Flat gradient of the named weights at features x (T, F), in train- or eval-mode batch norm."""
    net = model or case.model
    params = restart_params(dict(net.named_parameters()), 1, names)
    grads = parameter_gradients(net, params, names, x.unsqueeze(0), case.labels, bn_train, create_graph=False)
    return torch.cat([g.reshape(-1) for g in grads])


def gradient_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return 1.0 - float(cosine(a.unsqueeze(0), b)[0])


def naive_running_stats(model: ReconModel, dummies: list[torch.Tensor], forwards_each: int) -> dict[str, torch.Tensor]:
    """The running statistics an nn.Module in train mode would hold after the attack's forwards on `dummies`
    (each repeated `forwards_each` times): nn.BatchNorm's exponential average with momentum 0.1."""
    stats = {k: v.clone() for k, v in model.buffer_dict().items() if k.endswith(("running_mean", "running_var"))}
    params = restart_params(dict(model.named_parameters()), 1, ())
    for x in dummies:
        with probe() as seen, torch.no_grad():
            model.functional(params, x.unsqueeze(0), bn_train=True)
        for _ in range(forwards_each):
            for key, value in batch_norm_statistics(seen).items():
                prefix, kind = key.rsplit(".", 1)
                name = f"{prefix}.running_{kind}"
                stats[name] = (1 - BN_MOMENTUM) * stats[name] + BN_MOMENTUM * value[0]
    return stats


def with_buffers(model: ReconModel, stats: dict[str, torch.Tensor]) -> ReconModel:
    """A copy of the model whose running statistics are `stats`."""
    drifted = copy.deepcopy(model)
    buffers = dict(drifted.named_buffers())
    for name, value in stats.items():
        buffers[name].copy_(value)
    return drifted


def measure_batch_norm(case: Case, dummies: list[torch.Tensor], forwards_each: int) -> dict[str, float]:
    """How batch norm changes the gradient the attack must reproduce.

    - cos(train, eval): the client's (train-mode) gradient against the same features' eval-mode gradient;
    - drift: how far a naive module's running statistics move over the attack's forwards, relative to
      their stored values, and the eval-mode gradient at the truth with drifted statistics.
    Our functional batch norm never writes buffers, so the drift is what a naive implementation would add.
    """
    out = {}
    stats = naive_running_stats(case.model, dummies, forwards_each)
    drifted = with_buffers(case.model, stats)
    for label, layers in (("output", "output"), ("all", "all")):
        names = select_layers(case.model, layers)
        train = target_gradient(case, case.x_true, names, bn_train=True)
        evalg = target_gradient(case, case.x_true, names, bn_train=False)
        out[f"cos_train_eval_{label}"] = gradient_cosine(train, evalg)
        out[f"cos_train_eval_drifted_{label}"] = gradient_cosine(
            train, target_gradient(case, case.x_true, names, bn_train=False, model=drifted))
    stored = case.model.buffer_dict()
    mean_shift = [float((stats[k] - stored[k]).abs().mean()) for k in stats if k.endswith("running_mean")]
    var_ratio = [float((stats[k] / stored[k]).log().abs().mean().exp()) for k in stats if k.endswith("running_var")]
    out["running_mean_abs_shift"] = sum(mean_shift) / len(mean_shift)
    out["running_var_ratio"] = sum(var_ratio) / len(var_ratio)
    return out


def drifted_case(case: Case, dummies: list[torch.Tensor], forwards_each: int) -> Case:
    """The case as a naive attacker would see it after its forwards polluted the running statistics."""
    return dataclasses.replace(case, model=with_buffers(case.model, naive_running_stats(case.model, dummies,
                                                                                           forwards_each)))


# ---- information, CTC, landscape, early stop ----------------------------------------------------------------


def last_modules(model: ReconModel, k: int) -> tuple[str, ...]:
    """Parameter names of the last k modules (in definition order): the 'last-k layers'."""
    modules: list[str] = []
    for name, _ in model.named_parameters():
        module = name.rsplit(".", 1)[0]
        if module not in modules:
            modules.append(module)
    return tuple(modules[-k:])


def matched_per_unknown(case: Case, layers: str | tuple[str, ...]) -> float:
    """Gradient numbers matched per unknown feature value (T * F)."""
    names = select_layers(case.model, layers)
    numbers = sum(p.numel() for n, p in case.model.named_parameters() if n in names)
    return numbers / case.x_true.numel()


def ctc_feasibility(model: ReconModel, data: DataConfig) -> list[dict[str, float | str]]:
    """Per clip: input frames, output frames after the time stride, and the frames CTC needs for the label."""
    front_end = front_end_for("ds2")
    rows = []
    for utt in load_selection(data):
        frames = front_end.raw(utt.load()).shape[0]
        out, need = model.output_frames(frames), min_ctc_frames(utt.labels)
        rows.append({"utt_id": utt.utt_id, "input_frames": frames, "output_frames": out, "labels": len(utt.labels),
                     "ctc_min_frames": need, "slack": out / need})
    return rows


def matching_loss(case: Case, x: torch.Tensor, layers: str | tuple[str, ...]) -> float:
    """Cosine matching loss of features x (T, F) against the client's gradient of `layers`."""
    names = select_layers(case.model, layers)
    target = target_gradient(case, case.x_true, names, bn_train=True)
    return float(cosine(target_gradient(case, x, names, bn_train=True).unsqueeze(0), target)[0])


def landscape_line(case: Case, start: torch.Tensor, layers: str | tuple[str, ...],
                   alphas: tuple[float, ...]) -> list[float]:
    """Matching loss along (1 - a) * start + a * truth: is the truth a minimum, and how flat is it?"""
    return [matching_loss(case, (1 - a) * start + a * case.x_true, layers) for a in alphas]


def standard_noise(shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    """N(0, 1) from its own generator: the perturbation of the noise-ball, basin and coarse-grid measurements."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)


def noise_ball(case: Case, layers: str | tuple[str, ...], sigmas: tuple[float, ...], seed: int = 0) -> list[float]:
    """Matching loss at truth + sigma * N(0, 1): how much the gradient notices a random perturbation."""
    noise = standard_noise(tuple(case.x_true.shape), seed, case.device)
    return [matching_loss(case, case.x_true + s * noise, layers) for s in sigmas]


def attack_from(case: Case, cfg: AttackConfig, z0: torch.Tensor) -> dict[str, float]:
    """Run the attack from the grid values z0 (cfg's grid) instead of its init, with cfg.lr (which must be set:
    the case does not say which model's original lr would apply). Returns the loss (the cosine matching loss,
    or the span residual for the span objective) and the mae_ratio (vs the uniform start of cfg.seed) of the
    features at the start and at the attack's best iterate."""
    if cfg.lr is None:
        raise ValueError("attack_from needs an explicit cfg.lr")
    attack = Attack(case, cfg, cfg.lr)
    if tuple(z0.shape) != attack.grid:
        raise ValueError(f"start of shape {tuple(z0.shape)} is not on the attack's grid {attack.grid}")
    x0 = attack.features(z0[None])
    state = attack.start([cfg.seed])
    state.x, state.x_init, state.best_x = z0[None].clone(), x0.clone(), x0.clone()
    end = attack.run(state).best_x[0]
    denominator = uniform_start_mae(case.x_true, cfg.seed)
    if cfg.objective == "span":
        loss_start, loss_end = (float(attack.losses(x[None], attack._params(1))[0][0]) for x in (x0[0], end))
    else:
        loss_start, loss_end = matching_loss(case, x0[0], cfg.layers), matching_loss(case, end, cfg.layers)
    return {"loss_start": loss_start, "loss_end": loss_end,
            "ratio_start": mae(x0[0], case.x_true) / denominator, "ratio_end": mae(end, case.x_true) / denominator}


def basin(case: Case, cfg: AttackConfig, sigma: float = 0.3, seed: int = 1) -> dict[str, float]:
    """Local identifiability: run the attack from truth + sigma * N(0, 1) (noise seed `seed`) instead of its init.

    A far start can fail because the optimiser is trapped; this asks whether the gradient pins the features
    down at all near the truth. If matching lowers the loss while the error stays (end mae_ratio ~ start
    mae_ratio), the noise lies in directions the gradient does not see. Returns `attack_from`'s losses and
    mae_ratios. Full resolution only (`coarse_projection` is the coarse-grid counterpart); cfg.lr must be set.
    """
    if Attack(case, cfg, cfg.lr or 0.0).grid != tuple(case.x_true.shape):
        raise ValueError("basin starts at the features themselves: use coarse_time = coarse_freq = 1")
    return attack_from(case, cfg, case.x_true + sigma * standard_noise(tuple(case.x_true.shape), seed, case.device))


def interpolation_matrices(shape: tuple[int, int], grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, t) and (F, f) matrices with upsample(z) = A_t @ z @ A_f.T: bilinear interpolation is separable, so
    each is the upsampling of unit vectors along one axis (constant along the other)."""
    (t, f), (big_t, big_f) = grid, shape
    along_t = upsample(torch.eye(t)[:, :, None].expand(t, t, f).contiguous(), shape)[:, :, 0].T
    along_f = upsample(torch.eye(f)[:, None, :].expand(f, t, f).contiguous(), shape)[:, 0, :].T
    assert along_t.shape == (big_t, t) and along_f.shape == (big_f, f)
    return along_t, along_f


def grid_projection(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The grid values z whose upsampling is nearest x (T, F) in squared error: the least-squares projection
    pinv(A_t) @ x @ pinv(A_f).T, exact (the pseudo-inverse of a Kronecker product is that of its factors)."""
    along_t, along_f = (a.double() for a in interpolation_matrices(tuple(x.shape), grid))
    z = torch.linalg.pinv(along_t) @ x.double().cpu() @ torch.linalg.pinv(along_f).T
    return z.to(x.dtype).to(x.device)


def coarse_projection(case: Case, cfg: AttackConfig, sigmas: tuple[float, ...] = (0.0, 0.3),
                      seed: int = 1) -> dict[str, dict[str, float]]:
    """Is the truth's own projection onto cfg's coarse grid a minimum of the coarse matching objective?

    "projection": mae_ratio (vs the uniform start of cfg.seed) and cosine matching loss of the upsampled
    least-squares projection of the truth (`grid_projection`): what a coarse attack that got the coarse
    structure exactly right would score. "sigma s": `attack_from` the projection plus s * N(0, 1) in the grid
    values (noise seed `seed`). If the attack lowers the loss while the mae_ratio rises, the coarse objective's
    minima lie away from the truth's projection. cfg.lr must be set.
    """
    attack = Attack(case, cfg, cfg.lr or 0.0)
    z = grid_projection(case.x_true, attack.grid)
    x = attack.features(z[None])[0]
    out = {"projection": {"loss": matching_loss(case, x, cfg.layers),
                          "ratio": mae(x, case.x_true) / uniform_start_mae(case.x_true, cfg.seed)}}
    noise = standard_noise(attack.grid, seed, case.device)
    for s in sigmas:
        out[f"sigma {s:g}"] = attack_from(case, cfg, z + s * noise)
    return out


def low_dim_floors(case: Case, seed: int = 0) -> dict[str, float]:
    """mae_ratio (vs the uniform start) of low-dimensional fits of the truth itself: what an attack that got
    only the coarse shape right would score (per-frame mean over frequency, best rank-1 approximation, 5 x 9
    moving average)."""
    x = case.x_true
    denominator = uniform_start_mae(x, seed)
    u, sv, v = torch.linalg.svd(x, full_matrices=False)
    fits = {
        "frame mean": x.mean(1, keepdim=True).expand_as(x),
        "rank 1": (u[:, :1] * sv[:1]) @ v[:1],
        "5x9 moving average": torch.nn.functional.avg_pool2d(x[None, None], (5, 9), 1, (2, 4),
                                                              count_include_pad=False)[0, 0],
    }
    return {name: mae(fit, x) / denominator for name, fit in fits.items()}


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation (no ties expected in continuous losses); nan below three points."""
    if len(a) < 3:
        return math.nan
    ra = torch.tensor(a).argsort().argsort().double()
    rb = torch.tensor(b).argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def early_stop(trace: Trace, patience: int) -> dict[str, float]:
    """Where `patience` steps without a new best would have stopped this (patience-free) run, and what the
    run gained in matching loss and quality after that point."""
    best, since, stop = math.inf, 0, len(trace.history)
    for i, loss in enumerate(trace.history):
        if loss < best:
            best, since = loss, 0
        else:
            since += 1
        if since >= patience:
            stop = i + 1
            break
    at = next((j for j, s in enumerate(trace.steps) if s >= stop), len(trace.steps) - 1)
    loss_at = min(trace.history[:stop]) if stop else math.inf
    return {"stop": stop, "stopped": stop < len(trace.history), "loss_at_stop": loss_at,
            "loss_end": min(trace.history), "ratio_at_stop": trace.ratio_best[at], "ratio_end": trace.final_ratio,
            "would_improve": stop < len(trace.history) and trace.final_ratio < trace.ratio_best[at] - 1e-3}


# ---- the whole diagnosis ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiagnoseSettings:
    data: DataConfig
    preset: str = "tiny"
    max_iter: int = 200
    out: Path = Path("results/diagnose-ds2")
    #: None: every measurement; otherwise just the basin attacks, all of them or those named (`basin_slug`):
    #: minutes on the full preset, where the whole diagnosis takes hours
    only_basin: tuple[str, ...] | None = None
    #: CG iterations of the linearised oracle beside each gradient-matching basin attack (0: none)
    oracle_iters: int = 0


def _base(max_iter: int, **kw: object) -> AttackConfig:
    """The attacks of the diagnosis: patience off (the early-stop analysis replays it afterwards)."""
    return AttackConfig(**{**kw, "max_iter": max_iter, "patience": 0})


def attack_variants(model: ReconModel, max_iter: int) -> dict[str, AttackConfig]:
    """The attacks whose results the report compares, by name."""
    from recon_core.attack_presets import preset_overrides

    recommended = preset_overrides("recommended", "ds2")
    return {
        "original (output, lr 0.01, step)": _base(max_iter),
        "output, recommended": _base(max_iter, **{**recommended, "layers": "output"}),
        "conv1+bn1, recommended": _base(max_iter, **{**recommended, "layers": ("conv1", "bn1")}),
        "last 3 modules, recommended": _base(max_iter, **{**recommended, "layers": last_modules(model, 3)}),
        "all, recommended": _base(max_iter, **{**recommended, "layers": "all"}),
        "all, recommended, BN eval": _base(max_iter, **{**recommended, "layers": "all", "bn_mode": "eval"}),
        "all, recommended, clip slope 0.1": _base(max_iter, **{**recommended, "layers": "all", "clip_slope": 0.1}),
        "all, lr 0.05 Adam, uniform init": _base(max_iter, lr=0.05, schedule="cosine", layers="all"),
    }


Progress = Callable[[str], None]


#: the basin's attacks by name: (model, matched layers, objective)
BASIN_ATTACKS = {"ds2 output": ("ds2", "output", "gradient"), "ds2 all": ("ds2", "all", "gradient"),
                 "ds2 all, span": ("ds2", "all", "span"),
                 # every weight above the conv block, whose gradients jump as conv units cross the clip (section 11)
                 "ds2 no conv": ("ds2", ("grus", "bns", "bn_out", "fc"), "gradient"),
                 "ds1 output": ("ds1", "output", "gradient"),
                 "ds1 all": ("ds1", "all", "gradient")}


def basin_slug(name: str) -> str:
    """A basin attack's name as the CLI spells it (`ds2 all, span` -> `ds2-all-span`)."""
    return name.replace(", ", "-").replace(" ", "-")


def basins(utt: Utterance, settings: DiagnoseSettings, device: torch.device, say: Progress) -> dict[str, dict]:
    """`basin` on one clip for DS2 and, for comparison, DS1 (same preset), each matching output or all layers,
    and DS2's span objective over all recurrent weights (`settings.only_basin` may name a subset)."""
    out = {}
    for label, (model_name, layers, objective) in BASIN_ATTACKS.items():
        if settings.only_basin and basin_slug(label) not in settings.only_basin:
            continue
        net, front_end = build_model(ModelConfig(model=model_name, preset=settings.preset)), front_end_for(model_name)
        say(f"{utt.utt_id}: basin, {label} ({settings.max_iter} iterations)")
        try:
            case = build_case(net, front_end, utt, layers, device)
        except InfeasibleClip as exc:
            say(f"basin skipped: {exc}")
            continue
        cfg = _base(settings.max_iter, lr=BASIN_LR, schedule="cosine", layers=layers, objective=objective)
        out[label] = basin(case, cfg, BASIN_SIGMA, BASIN_SEED)
        if settings.oracle_iters and objective == "gradient":
            say(f"{utt.utt_id}: linearised oracle, {label} ({settings.oracle_iters} CG iterations)")
            out[label] |= basin_oracle(case, settings.oracle_iters)
    return out


def basin_oracle(case: Case, iters: int) -> dict[str, float]:
    """The basin's perturbation undone by the linearised oracle (`linearised_oracle`): the mae_ratio an ideal local
    attack would reach after `iters` Gauss-Newton products, the visible fraction of the perturbation, and the
    central-difference/autograd gap of the Jacobian at each ORACLE_STEPS step (how far the gradient is smooth)."""
    shape = tuple(case.x_true.shape)
    lin = Linearised(case, case.x_true)
    end = linearised_oracle(lin, BASIN_SIGMA * standard_noise(shape, BASIN_SEED, case.device), iters)[-1]
    direction = standard_noise(shape, BASIN_SEED + 1, case.device).double()
    probe_u = [standard_noise(tuple(g.shape), BASIN_SEED + 2, case.device).double() for g in lin.at_x]
    gaps = {f"gap at {step:g}": adjoint_gap(lin, direction, probe_u, step) for step in ORACLE_STEPS}
    return {"oracle_ratio": end["ratio"], "oracle_visible": end["visible"]} | gaps


def coarse_projections(utt: Utterance, settings: DiagnoseSettings, device: torch.device,
                       say: Progress) -> dict[str, dict]:
    """`coarse_projection` on one clip for DS2 on the recommended grid, matching output or all layers (attacks
    at the basin's lr and schedule, noise seed BASIN_SEED)."""
    from recon_core.attack_presets import preset_overrides

    net, front_end = build_model(ModelConfig(model="ds2", preset=settings.preset)), front_end_for("ds2")
    out = {}
    for layers in ("output", "all"):
        say(f"{utt.utt_id}: coarse projection, ds2 {layers} ({settings.max_iter} iterations per attack)")
        cfg = _base(settings.max_iter, **{**preset_overrides("recommended", "ds2"), "layers": layers,
                                          "lr": BASIN_LR, "schedule": "cosine"})
        case = build_case(net, front_end, utt, layers, device)
        out[f"ds2 {layers}, grid {cfg.coarse_time}x{cfg.coarse_freq}"] = coarse_projection(
            case, cfg, (0.0, BASIN_SIGMA), BASIN_SEED)
    return out


def diagnose_ds2(settings: DiagnoseSettings, say: Progress = print) -> dict:
    """Every measurement on the selected clips; writes report.md, measurements.json and plots into out."""
    model = build_model(ModelConfig(model="ds2", preset=settings.preset))
    front_end = front_end_for("ds2")
    device = torch.device("cpu")
    results: dict = {"settings": {"preset": settings.preset, "max_iter": settings.max_iter,
                                  "data": settings.data.model_dump(mode="json")}}
    results["ctc"] = ctc_feasibility(model, DataConfig(data=settings.data.data))  # cheap: every clip in --data
    clips = []
    for utt in load_selection(settings.data):
        try:
            base_case = build_case(model, front_end, utt, "output", device)
        except InfeasibleClip as exc:
            say(f"skipped: {exc}")
            continue
        if settings.only_basin is not None:
            clips.append({"utt_id": utt.utt_id, "frames": base_case.x_true.shape[0],
                          "basin": basins(utt, settings, device, say)})
            continue
        say(f"{utt.utt_id}: landscape and information")
        clip: dict = {"utt_id": utt.utt_id, "frames": base_case.x_true.shape[0]}
        uniform = initial_guess(tuple(base_case.x_true.shape), "uniform", [0], device)[0]
        alphas = tuple(i / 10 for i in range(11))
        sigmas = (0.1, 0.3, 1.0)
        clip["landscape"] = {"alphas": alphas, "sigmas": sigmas}
        layer_sets = {"output": "output", "conv1+bn1": ("conv1", "bn1"), "last 3 modules": last_modules(model, 3),
                      "all": "all"}
        clip["low_dim_floors"] = low_dim_floors(base_case)
        clip["per_unknown"] = {k: matched_per_unknown(base_case, v) for k, v in layer_sets.items()}
        for label, layers in layer_sets.items():
            clip["landscape"][label] = {"line": landscape_line(base_case, uniform, layers, alphas),
                                        "noise": noise_ball(base_case, layers, sigmas)}
        traces = {}
        for name, cfg in attack_variants(model, settings.max_iter).items():
            say(f"{utt.utt_id}: attack '{name}' ({cfg.max_iter} iterations)")
            case = build_case(model, front_end, utt, cfg.layers, device)
            traces[name] = traced_attack(case, cfg, name)
        all_case = build_case(model, front_end, utt, "all", device)
        dummies = [initial_guess(tuple(all_case.x_true.shape), "uniform", [0], device)[0]]
        say(f"{utt.utt_id}: batch norm")
        clip["batch_norm"] = measure_batch_norm(all_case, dummies, forwards_each=settings.max_iter)
        recommended_all = attack_variants(model, settings.max_iter)["all, recommended"]
        traces["all, recommended, BN eval drifted"] = traced_attack(
            drifted_case(all_case, dummies, settings.max_iter),
            recommended_all.model_copy(update={"bn_mode": "eval"}), "all, recommended, BN eval drifted")
        clip["basin"] = basins(utt, settings, device, say)
        clip["coarse_projection"] = coarse_projections(utt, settings, device, say)
        clip["attacks"] = {name: dataclasses.asdict(t) | {"cfg": t.cfg.model_dump(mode="json")}
                           for name, t in traces.items()}
        clip["loss_mae_spearman"] = {name: spearman(t.loss[1:], t.ratio_current[1:]) for name, t in traces.items()}
        clip["early_stop"] = {name: {p: early_stop(t, p) for p in PATIENCES} for name, t in traces.items()}
        clips.append(clip)
    results["clips"] = clips
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / "measurements.json").write_text(json.dumps(results, indent=1, default=str))
    write_report(results, settings.out)
    return results


# ---- finished runs ------------------------------------------------------------------------------------------


def run_row(folder: Path) -> dict[str, object]:
    """One run folder as a table row: mean over clips of the best restart's mae_ratio against its own init (what
    metrics.csv holds) and against the uniform U[-1, 1] start of the same seed (the original's scale)."""
    from recon_core.config import load_run_config
    from recon_core.outputs import read_metrics

    cfg = load_run_config(folder / "config.yaml")
    front_end = front_end_for(cfg.model.model)
    utts = {u.utt_id: u for u in load_selection(cfg.data)}
    own, uniform = [], []
    for row in (r for r in read_metrics(folder / "metrics.csv") if r["best"] == "True"):
        truth = front_end.standardise(front_end.raw(utts[row["utt_id"]].load()))
        own.append(float(row["mae_ratio"]))
        uniform.append(float(row["feature_mae"]) / uniform_start_mae(truth, int(row["seed"])))
    a = cfg.attack
    return {"run": folder.name, "model": cfg.model.model, "layers": a.layers if isinstance(a.layers, str) else
            ",".join(a.layers), "max_iter": a.max_iter, "clips": len(own), "mae_ratio (own init)": sum(own) / len(own),
            "mae_ratio (uniform start)": sum(uniform) / len(uniform)}


def runs_table(folders: list[Path]) -> str:
    """Markdown table of finished runs (`asr-recon diagnose ds2 --runs ...`)."""
    rows = [run_row(f) for f in folders]
    return _table(list(rows[0]), [list(r.values()) for r in rows])


# ---- report -------------------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _plot(clip: dict, out: Path) -> list[str]:
    """Quality and matching loss over the iterations of every attack, and the landscape lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    for name, t in clip["attacks"].items():
        ax1.plot(t["steps"], t["ratio_best"], label=name)
        ax2.semilogy(t["steps"], t["loss"], label=name)
    ax1.set(xlabel="iteration", ylabel="mae_ratio (vs uniform start)", title=clip["utt_id"])
    ax2.set(xlabel="iteration", ylabel="matching loss (best restart)")
    ax1.legend(fontsize=6)
    fig.tight_layout()
    names.append(f"{clip['utt_id']}-attacks.png")
    fig.savefig(out / names[-1], dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    land = clip["landscape"]
    for label, v in land.items():
        if isinstance(v, dict):
            ax.plot(land["alphas"], v["line"], marker="o", label=label)
    ax.set(xlabel="a: (1 - a) * uniform start + a * truth", ylabel="cosine matching loss", title=clip["utt_id"])
    ax.legend(fontsize=7)
    fig.tight_layout()
    names.append(f"{clip['utt_id']}-landscape.png")
    fig.savefig(out / names[-1], dpi=90)
    plt.close(fig)
    return names


def _basin_section(clip: dict) -> list[str]:
    attack_keys = ("loss_start", "loss_end", "ratio_start", "ratio_end")
    parts = [f"### Basin: the attack started at truth + {BASIN_SIGMA} N(0, 1) (Adam, lr {BASIN_LR}, cosine, "
             "full resolution; loss: cosine matching loss, or the span residual for the span objective)",
             _table(["model, layers", "loss at start", "at end", "mae_ratio at start", "at end"],
                    [[name, *(b[k] for k in attack_keys)] for name, b in clip["basin"].items()])]
    with_oracle = {name: b for name, b in clip["basin"].items() if "oracle_ratio" in b}
    if with_oracle:
        oracle_keys = [k for k in next(iter(with_oracle.values())) if k not in attack_keys]
        parts += ["Linearised oracle (recon_core/linearised.py): the mae_ratio once the part of the same perturbation "
                  "that the Jacobian of the matched gradient at the truth sees is removed (CG on J^T J), the seen "
                  "fraction of its norm, and the relative gap between central-difference and autograd J at each "
                  "step (large: the gradient jumps within that distance)",
                  _table(["model, layers", *(k.replace("_", " ") for k in oracle_keys)],
                         [[name, *(b[k] for k in oracle_keys)] for name, b in with_oracle.items()])]
    return parts


def write_report(results: dict, out: Path) -> Path:
    """report.md with one section per failure mode; every number is also in measurements.json."""
    s = results["settings"]
    parts = [f"# DS2 diagnosis ({s['preset']} preset, {s['max_iter']} iterations per attack)",
             "mae_ratio = feature MAE (standardised spectrogram) / MAE of the uniform U[-1, 1] start with the same "
             "seed, whatever init the attack used.",
             "## CTC feasibility (every clip in --data: output frames after the time stride vs frames the label "
             "needs)",
             _table(["clip", "input frames", "output frames", "labels", "CTC min frames", "slack"],
                    [list(r.values()) for r in results["ctc"]])]
    for clip in results["clips"]:
        parts.append(f"## {clip['utt_id']} ({clip['frames']} frames)")
        if "landscape" not in clip:  # --only-basin
            parts += _basin_section(clip)
            continue
        land, attacks = clip["landscape"], clip["attacks"]
        parts.append("### Information and landscape per matched layer set")
        rows = []
        for label, per in clip["per_unknown"].items():
            line = land[label]["line"]
            rows.append([label, per, line[0], line[5], line[9], line[10], *land[label]["noise"]])
        parts.append(_table(["layers", "matched numbers per unknown", "loss at start", "a=0.5", "a=0.9", "truth",
                             *[f"truth + {sg} noise" for sg in land["sigmas"]]], rows))
        parts.append("### Low-dimensional fits of the truth (mae_ratio an attack right only in that space would get)")
        parts.append(_table(list(clip["low_dim_floors"]), [list(clip["low_dim_floors"].values())]))
        parts.append("### Attacks")
        rows = []
        for name, t in attacks.items():
            c = t["cfg"]
            sat = t["clip_zero_grad"]
            es = clip["early_stop"][name]
            rows.append([name, c["lr"] if c["lr"] is not None else 0.01, c["schedule"], c["init"],
                         f"{c['coarse_time']}x{c['coarse_freq']}", t["ratio_best"][-1], t["ratio_best"][0],
                         t["loss"][-1], clip["loss_mae_spearman"][name], t["affine"]["slope"],
                         t["affine"]["correlation"], sat[0], sat[len(sat) // 2], sat[-1],
                         *[("stop@" + str(es[p]["stop"]) + (" (would improve)" if es[p]["would_improve"] else ""))
                           if es[p]["stopped"] else "-" for p in PATIENCES], t["seconds"]])
        parts.append(_table(["attack", "lr", "schedule", "init", "grid", "final mae_ratio", "start mae_ratio",
                             "matching loss", "spearman(loss, MAE)", "affine slope to truth", "correlation",
                             "clip zero-grad init", "mid", "end",
                             *[f"patience {p}" for p in PATIENCES], "seconds"], rows))
        parts += _basin_section(clip)
        parts.append(f"### Coarse grid: the attack started at the truth's least-squares projection onto the "
                     f"recommended grid, + 0 and + {BASIN_SIGMA} N(0, 1) in the grid values (Adam, lr {BASIN_LR}, "
                     "cosine)")
        rows = []
        for label, c in clip["coarse_projection"].items():
            rows += [[label, f"projection + {start}", *r.values()] for start, r in c.items() if start != "projection"]
        parts.append(_table(["model, layers", "start", "matching loss at start", "at end", "mae_ratio at start",
                             "at end"], rows))
        parts.append("### Batch norm")
        parts.append(_table(["measure", "value"], [[k, v] for k, v in clip["batch_norm"].items()]))
        parts += [f"![{name}]({name})" for name in _plot(clip, out)]
    path = out / "report.md"
    path.write_text("\n\n".join(parts) + "\n")
    return path
