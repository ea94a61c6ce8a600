"""What the sweeps attack: one Point per table row, each a RunConfig whose run folder is named after how it
differs from the model's original settings (so equal settings share one folder and one set of numbers).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paper.budget import DURATION_BUCKETS, MAIN_BUCKET, Budget
from recon_core.config import ORIGINAL_LR, AttackConfig, DataConfig, ModelConfig, RunConfig

#: sweep name -> (AttackConfig field, values): the original scripts' sweeps
ATTACK_SWEEPS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "lr": ("lr", (0.001, 0.01, 0.1, 0.5, 1.0)),
    "top_grad": ("top_grad_percentage", (0.2, 0.4, 0.6, 0.8, 1.0)),
    "distance": ("distance", ("cosine", "l2", "cosine+l2")),
    "layers": ("layers", ("output", "all")),
}
SWEEP_ORDER = ("lr", "top_grad", "duration", "distance", "layers")
#: models whose sweeps vary the recommended preset rather than the original settings (DS1 is reproduced as it was)
SWEEP_AROUND_PRESET = ("ds2",)

#: DS2's suspected failure modes (attack-reference.md), each switched off alone from the original settings.
#: Mode 4 (the time stride) is architecture, not an attack setting: `asr-recon diagnose ds2` measures it.
#: A switch whose AttackConfig field does not exist (yet) is left out of the table.
FAILURE_MODES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("original settings", {}),
    ("1 batch norm: eval mode", {"bn_mode": "eval"}),
    ("2 Hardtanh: surrogate slope 0.1", {"clip_slope": 0.1}),
    ("3 few matched numbers: all layers", {"layers": "all"}),
    ("5 optimiser: lr 0.05, signed, staircase, no early stop",
     {"lr": 0.05, "signed_grad": True, "schedule": "staircase", "patience": 0}),
)


@dataclass(frozen=True)
class Point:
    """One row of a sweep table."""

    model: str
    sweep: str
    value: str
    cfg: RunConfig
    run: str  # run folder name under <out>/runs/


def recommended_overrides(model: str) -> dict[str, Any] | None:
    """HOOK for the DS2 fixes: the `recommended` attack preset of recon_core.attack_presets, once it exists
    and sets anything for `model`; None until then (the paper then reports the original settings only)."""
    try:
        from recon_core.attack_presets import preset_overrides
    except ImportError:
        return None
    return preset_overrides("recommended", model) or None


def label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def bucket_label(bucket: tuple[int, int]) -> str:
    return f"{bucket[0] // 1000}-{bucket[1] // 1000} s"


def original_config(model: str, budget: Budget, data: Path | None) -> RunConfig:
    """The original scripts' settings on the budget's clips of 1-2 s (lr written out, so that the lr sweep's
    point at the original lr is the same run)."""
    return RunConfig(
        model=ModelConfig(model=model, preset=budget.preset),
        data=DataConfig(data=data, min_ms=MAIN_BUCKET[0], max_ms=MAIN_BUCKET[1], end=budget.clips_per_bucket),
        attack=AttackConfig(lr=ORIGINAL_LR[model], max_iter=budget.max_iter, n_seeds=budget.n_seeds, seed=budget.seed),
    )


def vary(cfg: RunConfig, section: str, **fields: Any) -> RunConfig:
    raw = cfg.model_dump()
    raw[section] = {**raw[section], **fields}
    return RunConfig.model_validate(raw)


def run_name(prefix: str, reference: RunConfig, cfg: RunConfig) -> str:
    """`ds1-base`, `ds1-lr=0.1`, ...: the prefix and the settings that differ from `reference`."""
    old, new = _flat(reference.model_dump(mode="json")), _flat(cfg.model_dump(mode="json"))
    diff = [f"{k}={label(v)}" for k, v in new.items() if old.get(k) != v]
    return (f"{prefix}-" + ("_".join(diff) if diff else "base")).replace("/", "-").replace(" ", "")


def _prefix(model: str, overrides: dict[str, Any] | None) -> str:
    """`ds2-recommended-<hash>` for the preset's settings: an edited preset gets new folders, not a clash."""
    if not overrides:
        return model
    digest = hashlib.sha1(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{model}-recommended-{digest}"


def base_config(model: str, budget: Budget, data: Path | None) -> RunConfig:
    """What the sweeps vary: DS1's original settings (a reproduction); DS2's recommended preset once it exists."""
    original = original_config(model, budget, data)
    recommended = recommended_overrides(model) if model in SWEEP_AROUND_PRESET else None
    return vary(original, "attack", **recommended) if recommended else original


def sweep_points(model: str, budget: Budget, data: Path | None) -> list[Point]:
    """The five sweeps around the model's base settings, the original settings against the recommended preset,
    and for DS2 the failure-mode switches."""
    original, base = original_config(model, budget, data), base_config(model, budget, data)
    recommended = recommended_overrides(model)
    prefixes = {"base": model if base == original else _prefix(model, recommended),
                "original": model if base == original else f"{model}-original"}

    def point(sweep: str, value: str, cfg: RunConfig, relative_to: str = "base") -> Point:
        reference = base if relative_to == "base" else original
        return Point(model, sweep, value, cfg, run_name(prefixes[relative_to], reference, cfg))

    points = []
    for sweep in SWEEP_ORDER:
        if sweep == "duration":
            points += [point(sweep, bucket_label(b), vary(base, "data", min_ms=b[0], max_ms=b[1]))
                       for b in DURATION_BUCKETS]
            continue
        field, values = ATTACK_SWEEPS[sweep]
        points += [point(sweep, label(v), vary(base, "attack", **{field: v})) for v in values]
    points.append(point("settings", "original", original, "original"))
    if recommended:
        preset = vary(original, "attack", **recommended)
        points.append(point("settings", "recommended preset", preset, "base" if preset == base else "original"))
    if model == "ds2":
        points += [point("failure_modes", name, vary(original, "attack", **change), "original")
                   for name, change in FAILURE_MODES if set(change) <= set(AttackConfig.model_fields)]
    return points


def _flat(d: dict[str, Any]) -> dict[str, Any]:
    """Leaf settings by their own name (no two sections of a RunConfig share a field name)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        out.update(_flat(value) if isinstance(value, dict) else {key: value})
    return out
