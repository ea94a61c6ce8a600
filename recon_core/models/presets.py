"""Model presets: `full` = the original experiments' sizes, `tiny` = the same shapes, small enough for a CPU."""

from __future__ import annotations

from collections.abc import Callable

import torch
from rich.table import Table

from recon_core.config import ModelConfig
from recon_core.errors import InputError
from recon_core.models.base import ReconModel
from recon_core.models.ds1 import DS1, TorchaudioDS1
from recon_core.models.ds2 import DS2

PRESETS: dict[tuple[str, str, str], Callable[[], ReconModel]] = {
    ("ds1", "original", "full"): lambda: DS1(n_hidden=2048),
    ("ds1", "original", "tiny"): lambda: DS1(n_hidden=128),
    ("ds1", "torchaudio", "full"): lambda: TorchaudioDS1(n_hidden=2048),
    ("ds1", "torchaudio", "tiny"): lambda: TorchaudioDS1(n_hidden=128),
    ("ds2", "original", "full"): lambda: DS2(channels=32, n_hidden=800, n_layers=5),
    ("ds2", "original", "tiny"): lambda: DS2(channels=8, n_hidden=64, n_layers=2),
}


def build_model(cfg: ModelConfig) -> ReconModel:
    """The client's model: seeded random init (the original had no trained checkpoint) or `cfg.weights`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.weight_seed)
        model = PRESETS[(cfg.model, cfg.variant, cfg.preset)]()
    if cfg.weights is not None:
        if not cfg.weights.is_file():
            raise InputError(f"weights file {cfg.weights} does not exist")
        state = torch.load(cfg.weights, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise InputError(f"weights file {cfg.weights} does not fit {cfg.model}/{cfg.preset}: {first}") from exc
    return model.train()


def count_parameters(model: ReconModel, names: tuple[str, ...] | None = None) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if names is None or n in names)


def describe_models() -> Table:
    """Every model/variant/preset with its size and the size of the output-layer gradient it shares."""
    table = Table(title="asr-recon models")
    for col in ("model", "variant", "preset", "parameters", "output-layer gradient", "output layer"):
        table.add_column(col, justify="right" if col in ("parameters", "output-layer gradient") else "left")
    for model, variant, preset in PRESETS:
        net = build_model(ModelConfig(model=model, variant=variant, preset=preset))
        table.add_row(
            model,
            variant,
            preset,
            f"{count_parameters(net):,}",
            f"{count_parameters(net, net.output_layer):,}",
            ", ".join(net.output_layer),
        )
    return table
