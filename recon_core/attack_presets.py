"""Named attack settings per model, applied at the CLI edge before the flags actually given.

`original` is the original scripts' behaviour (AttackConfig's defaults); `recommended` is what the DS2
diagnosis (docs/ds2-failure-modes.md, `asr-recon diagnose ds2`) measured to work better; `span` (DS2 only)
switches to the span objective of recon_core/span.py. A preset only
fills AttackConfig fields, so the resolved values land in config.yaml like any other setting and a run
reproduces from that file alone.
"""

from __future__ import annotations

from typing import Any

from recon_core.errors import InputError

AttackOverrides = dict[str, Any]

#: preset name -> model -> overrides (a preset may leave a model out: asking for it is an input error)
ATTACK_PRESETS: dict[str, dict[str, AttackOverrides]] = {
    "original": {"ds1": {}, "ds2": {}},
    "recommended": {
        # measured on DS1 too (same doc): the CMVN-mean start and cosine schedule help it as well; its default
        # (the original) is unchanged
        "ds1": {"init": "mean", "lr": 0.05, "schedule": "cosine", "patience": 0},
        # docs/ds2-failure-modes.md: full-resolution matching overfits directions the gradient is blind to
        # (matching loss ~0.005 at mae_ratio 0.85); a coarse grid from the CMVN mean with a cosine schedule
        # and no early stop is what moved towards the truth.
        "ds2": {"init": "mean", "lr": 0.05, "schedule": "cosine", "patience": 0, "coarse_time": 2,
                "coarse_freq": 64},
    },
    # docs/ds2-failure-modes.md, section 10: the row spaces of the GRU weights' gradients, matched at full
    # resolution from the CMVN mean; it needs the full preset's 32 conv channels (tiny's conv block has fewer
    # outputs than the spectrogram has values) and it has no DS1 settings (DS1's first layer leaks directly)
    "span": {
        "ds2": {"objective": "span", "layers": "all", "init": "mean", "lr": 0.05, "schedule": "cosine",
                "patience": 0},
    },
}


def preset_overrides(name: str, model: str) -> AttackOverrides:
    """The AttackConfig fields that preset `name` sets for `model` (empty: the defaults)."""
    if name not in ATTACK_PRESETS:
        raise InputError(f"attack preset {name!r} is not one of {', '.join(ATTACK_PRESETS)}")
    if model not in ATTACK_PRESETS[name]:
        raise InputError(f"attack preset {name!r} has no settings for {model}; for {model} use one of "
                         f"{', '.join(n for n, p in ATTACK_PRESETS.items() if model in p)}")
    return dict(ATTACK_PRESETS[name][model])
