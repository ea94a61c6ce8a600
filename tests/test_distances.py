"""Distances between gradients: the values the original defined, and exact where the attack ends up."""

from __future__ import annotations

import torch

from recon_core.distances import DISTANCES, cosine


def test_cosine_is_one_minus_cos() -> None:
    gen = torch.Generator().manual_seed(0)
    g, t = torch.randn(3, 50, generator=gen, dtype=torch.float64), torch.randn(50, generator=gen, dtype=torch.float64)
    expected = 1 - torch.nn.functional.cosine_similarity(g, t[None].expand_as(g), dim=1)
    torch.testing.assert_close(cosine(g, t), expected)


def test_cosine_near_a_match_is_small_and_never_negative() -> None:
    t = torch.randn(59_421)
    g = torch.stack([t * 3.0, t + 1e-5 * torch.randn_like(t)])
    d = cosine(g, t)
    assert (d >= 0).all() and d[0] < 1e-6 and 0 < d[1] < 1e-8


def test_mixed_distance_weights_its_terms() -> None:
    g, t = torch.tensor([[1.0, 0.0]]), torch.tensor([0.0, 2.0])
    assert float(DISTANCES["cosine"](g, t, 0.5)) == 1.0 and float(DISTANCES["l2"](g, t, 0.5)) == 2.5
    assert float(DISTANCES["cosine+l2"](g, t, 0.25)) == 0.75 * 1.0 + 0.25 * 2.5
