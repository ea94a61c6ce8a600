"""Typed configuration of a reconstruction run, validated once at the edge (CLI flags, YAML files).

Core code takes these objects, never raw dicts or argparse namespaces. Every model forbids unknown
fields so that a typo in a YAML file is an error naming the field rather than a silently ignored key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recon_core.errors import InputError

ModelName = Literal["ds1", "ds2"]
PresetName = Literal["tiny", "full"]
DistanceName = Literal["cosine", "l2", "cosine+l2"]
RegulariserName = Literal["none", "tv", "l2"]
ScheduleName = Literal["step", "cosine", "staircase"]
InitName = Literal["uniform", "gaussian", "zeros", "mean"]
BatchNormMode = Literal["train", "eval"]
ObjectiveName = Literal["gradient", "span"]

#: Per-model default learning rates of the original scripts (DS1 0.5, DS2 0.01).
ORIGINAL_LR = {"ds1": 0.5, "ds2": 0.01}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Frozen):
    """Which network the client trains, and with which weights."""

    model: ModelName = "ds1"
    variant: str = "original"
    preset: PresetName = "tiny"
    weight_seed: int = 0
    weights: Path | None = None

    @model_validator(mode="after")
    def _known_variant(self) -> ModelConfig:
        allowed = {"ds1": ("original", "torchaudio"), "ds2": ("original",)}[self.model]
        if self.variant not in allowed:
            raise ValueError(f"variant {self.variant!r} is not one of {', '.join(allowed)} for {self.model}")
        return self


class DataConfig(_Frozen):
    """Which utterances are attacked: duration bucket in ms [min_ms, max_ms), then index range [start, end)."""

    data: Path | None = None
    min_ms: float = Field(0.0, ge=0)
    max_ms: float = math.inf
    start: int = Field(0, ge=0)
    end: int | None = None
    ids: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _ordered(self) -> DataConfig:
        if self.max_ms <= self.min_ms:
            raise ValueError(f"max_ms {self.max_ms} must be greater than min_ms {self.min_ms}")
        if self.end is not None and self.end < self.start:
            raise ValueError(f"batch end {self.end} is before batch start {self.start}")
        return self


class AttackConfig(_Frozen):
    """How the dummy features are optimised. Defaults are the original scripts' settings."""

    lr: float | None = Field(None, gt=0, description="None: the model's original default (DS1 0.5, DS2 0.01)")
    max_iter: int = Field(1000, gt=0)
    n_seeds: int = Field(1, gt=0, description="random restarts per sample, run batched")
    seed: int = 0
    objective: ObjectiveName = Field("gradient", description="gradient: match the dummy's gradient (distance, "
                                     "top_grad_percentage); span: keep each matched recurrent weight's inputs in "
                                     "the row space of its shared gradient (recon_core/span.py)")
    distance: DistanceName = "cosine"
    l2_weight: float = Field(0.5, ge=0, le=1, description="weight of the L2 term in cosine+l2")
    top_grad_percentage: float = Field(1.0, gt=0, le=1)
    layers: str | tuple[str, ...] = "output"
    regulariser: RegulariserName = "none"
    reg_weight: float = Field(0.0, ge=0)
    schedule: ScheduleName = "step"
    patience: int = Field(100, ge=0, description="early stop after this many steps without a new best; 0 = off")
    min_delta: float = Field(0.0, ge=0, description="an improvement smaller than this does not count")
    init: InitName = Field("uniform", description="mean: the front end's CMVN mean (0) plus N(0, 0.1) noise")
    signed_grad: bool = False
    bn_mode: BatchNormMode = "train"
    coarse_time: int = Field(1, ge=1, description="optimise one value per this many frames, linearly interpolated")
    coarse_freq: int = Field(1, ge=1, description="optimise one value per this many bins, linearly interpolated")
    clip_slope: float = Field(0.0, ge=0, le=1, description="surrogate slope of Hardtanh outside its range in the "
                              "attack's input gradient; forward and matched gradients stay exact")
    bn_stats_weight: float = Field(0.0, ge=0, description="weight of a prior pulling each batch norm's batch mean "
                                   "and std towards the client's (an update that carries BN running statistics "
                                   "reveals them; see-through-gradients); 0 = off; needs a model with batch norm")

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: str | tuple[str, ...]) -> str | tuple[str, ...]:
        if isinstance(v, str) and "," in v:
            return tuple(s.strip() for s in v.split(",") if s.strip())
        return v

    def resolved_lr(self, model: str) -> float:
        return self.lr if self.lr is not None else ORIGINAL_LR[model]


class RunConfig(_Frozen):
    """Everything that determines a run's numbers (the output folder and device do not)."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    attack: AttackConfig = AttackConfig()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def describe_validation_error(err: ValidationError) -> str:
    """One line naming the first bad field, its value and what is allowed."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{where}: {first['msg']}{shown}"


def load_run_config(path: Path) -> RunConfig:
    """Read a run config YAML (as written by `asr-recon run` or `asr-recon study export`)."""
    if not path.is_file():
        raise InputError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise InputError(f"config file {path}: {describe_validation_error(exc)}") from exc


def first_difference(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    """Dotted name of the first setting that differs between two nested config dicts, with both values."""
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            return first_difference(a, b, f"{prefix}{key}.")
        return f"{prefix}{key} ({a!r} -> {b!r})"
    return "nothing"
