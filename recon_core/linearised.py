"""The shared gradient linearised at the truth: how much of a perturbation could an ideal local attack undo?

This separates information from optimisation. Started at truth + delta, an attack that matched the gradient to
first order can remove only the part of delta in the row space of J = dg/dx (g: the matched gradient, x: the
features) at the truth; the rest lies in J's null space and is invisible. Conjugate gradients on
J^T J z = J^T J delta, started at 0, stay in that row space and converge to its part of delta, best-seen
directions first: after k iterations, what a k-product Gauss-Newton solve with the true Jacobian would see.

J v comes from central differences of the gradient, J^T u from autograd (the attack's own double backward).
Both run in float64 at FD_STEP: DS2's gradient jumps whenever a clipped unit crosses 0 (its contribution to
every weight below switches on or off), so a larger step averages over those jumps (`adjoint_gap` measures it).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch

from recon_core.case import Case, parameter_gradients
from recon_core.metrics import mae, uniform_start_mae
from recon_core.models.functional import restart_params

#: central-difference step along a unit direction (float64)
FD_STEP = 1e-5
#: a matched layer whose client gradient is below this fraction of the largest is rounding noise and skipped:
#: a bias before train-mode batch norm has an identically zero gradient
ZERO_LAYER = 1e-6


class Linearised:
    """J and J^T of the case's matched gradient at a point, in float64, scaled by one weight (1 / |target|) so
    that |J delta| is the relative gradient change a perturbation causes."""

    def __init__(self, case: Case, x: torch.Tensor, fd_step: float = FD_STEP):
        self.case, self.fd_step = case, fd_step
        self.model = copy.deepcopy(case.model).double()
        self.params = restart_params(dict(self.model.named_parameters()), 1, case.names)
        norms = [float(t.double().norm()) for t in case.target]
        kept = [n > ZERO_LAYER * max(norms) for n in norms]
        self.names = tuple(n for n, k in zip(case.names, kept, strict=True) if k)
        self.weight = 1.0 / sum(n * n for n, k in zip(norms, kept, strict=True) if k) ** 0.5
        self.x = x.detach().double().requires_grad_(True)
        #: the weighted gradient at x, with the graph J^T u differentiates
        self.at_x = self.gradient(self.x, create_graph=True)

    def gradient(self, x: torch.Tensor, create_graph: bool = False) -> list[torch.Tensor]:
        """The kept matched gradients at features x (T, F), weighted."""
        grads = parameter_gradients(self.model, self.params, self.names, x[None], self.case.labels, bn_train=True,
                                    create_graph=create_graph)
        return [self.weight * g[0] for g in grads]

    def jvp(self, v: torch.Tensor, fd_step: float | None = None) -> list[torch.Tensor]:
        """J v by central differences at `fd_step` (default: the instance's) along v's direction."""
        h = self.fd_step if fd_step is None else fd_step
        norm = float(v.norm())
        if norm == 0:
            return [torch.zeros_like(g) for g in self.at_x]
        step = h * v / norm
        ahead, behind = self.gradient(self.x.detach() + step), self.gradient(self.x.detach() - step)
        return [(a - b) * (norm / (2 * h)) for a, b in zip(ahead, behind, strict=True)]

    def vjp(self, u: list[torch.Tensor]) -> torch.Tensor:
        return torch.autograd.grad(self.at_x, self.x, grad_outputs=u, retain_graph=True)[0]

    def normal(self, v: torch.Tensor) -> torch.Tensor:
        """J^T J v: the Gauss-Newton matrix of the L2 matching loss at x."""
        return self.vjp(self.jvp(v))


def adjoint_gap(lin: Linearised, v: torch.Tensor, u: list[torch.Tensor], fd_step: float | None = None) -> float:
    """|<u, J v> - <J^T u, v>| / |<J^T u, v>|: zero when the central difference is the derivative autograd sees."""
    exact = float((lin.vjp(u) * v).sum())
    differenced = sum(float((a * b).sum()) for a, b in zip(u, lin.jvp(v, fd_step), strict=True))
    return abs(differenced - exact) / abs(exact)


def conjugate_gradient(apply: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
                       iters: int) -> Iterator[torch.Tensor]:
    """Iterates of CG on apply(z) = b from z = 0 (apply symmetric positive semi-definite, b in its range)."""
    z, r = torch.zeros_like(b), b.clone()
    p, rs = r.clone(), float((r * r).sum())
    for _ in range(iters):
        if rs == 0:
            yield z
            continue
        ap = apply(p)
        alpha = rs / float((p * ap).sum())
        z, r = z + alpha * p, r - alpha * ap
        rs_next = float((r * r).sum())
        p, rs = r + (rs_next / rs) * p, rs_next
        yield z


def linearised_oracle(lin: Linearised, delta: torch.Tensor, iters: int, seed: int = 0) -> list[dict[str, float]]:
    """Per CG iteration: the mae_ratio (vs the uniform start of `seed`) of truth + delta with its visible part
    removed, and `visible` = |that part| / |delta|; `lin` is linearised at the truth. Iteration 0 is the start."""
    delta = delta.double()
    denominator = uniform_start_mae(lin.case.x_true, seed)
    truth = lin.x.detach()

    def row(i: int, seen: torch.Tensor) -> dict[str, float]:
        return {"iteration": i, "ratio": mae(truth + delta - seen, truth) / denominator,
                "visible": float(seen.norm() / delta.norm())}

    rows = [row(0, torch.zeros_like(delta))]
    for i, z in enumerate(conjugate_gradient(lin.normal, lin.normal(delta), iters), start=1):
        rows.append(row(i, z))
    return rows
