"""Study specs: one YAML file says what is searched, what is fixed, how trials are sampled and pruned.

A spec is validated once, here, into a frozen `StudySpec`; every problem is an `InputError` naming the
field. The part that decides what a trial *means* (model, data, fixed attack settings, search space,
objectives) is fingerprinted and stored on the study, so that a changed spec cannot join an old study.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recon_core.config import (
    AttackConfig,
    DataConfig,
    ModelConfig,
    RunConfig,
    describe_validation_error,
)
from recon_core.errors import InputError

DEFAULT_STORAGE = "sqlite:///results/studies.db"
DEFAULT_ARTIFACT_DIR = "results/artifacts"
ObjectiveName = Literal["mae_ratio", "seconds"]
Choice = str | int | float | bool


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatParam(_Frozen):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        if self.high < self.low:
            raise ValueError(f"high {self.high} is below low {self.low}")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0 (got {self.low})")
        return self

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def corners(self) -> list[Any]:
        return [self.low, self.high]


class IntParam(_Frozen):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        if self.high < self.low:
            raise ValueError(f"high {self.high} is below low {self.low}")
        if self.log and (self.low <= 0 or self.step != 1):
            raise ValueError("log scale needs low > 0 and step 1")
        return self

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def corners(self) -> list[Any]:
        return [self.low, self.high]


class CategoricalParam(_Frozen):
    type: Literal["categorical"]
    choices: tuple[Choice, ...] = Field(min_length=1)

    def suggest(self, trial: Any, name: str) -> Choice:
        return trial.suggest_categorical(name, list(self.choices))

    def corners(self) -> list[Any]:
        return list(self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class SamplerSpec(_Frozen):
    """TPE, seeded. Worker k of a launch samples with seed + k so that workers do not draw the same
    startup points."""

    type: Literal["tpe", "random"] = "tpe"
    seed: int = 0
    n_startup_trials: int = Field(10, ge=0)
    multivariate: bool = False


class PrunerSpec(_Frozen):
    """`plateau` (default): a patient pruner around MedianPruner: a trial is stopped once its best reported
    mae_ratio so far (search/pruning.py) has not dropped by the fraction min_delta over its last `patience`
    reports *and* it is worse than the median of completed trials at that step. Reports are made every
    `report_every` steps."""

    type: Literal["plateau", "median", "none"] = "plateau"
    patience: int = Field(5, gt=0, description="reports without improvement before the median is asked")
    min_delta: float = Field(0.001, ge=0, lt=1, description="relative drop of the best reported mae_ratio that counts")
    n_startup_trials: int = Field(3, ge=0, description="completed trials before anything is pruned")
    n_warmup_steps: int = Field(0, ge=0, description="global steps before a trial can be pruned")
    report_every: int = Field(10, gt=0, description="attack iterations between reports")


class StorageSpec(_Frozen):
    """Defaults for the storage; `--storage` on the command line wins. Heartbeats (RDB storages only)
    let a trial whose worker died become FAIL and be retried up to max_retry times. The environment
    variables ASR_RECON_HEARTBEAT_INTERVAL / ASR_RECON_GRACE_PERIOD override the two timings."""

    url: str = DEFAULT_STORAGE
    heartbeat_interval: int = Field(60, gt=0, description="seconds")
    grace_period: int | None = Field(None, gt=0, description="seconds; None: 2 x heartbeat_interval")
    max_retry: int = Field(2, ge=0)
    artifact_dir: str = DEFAULT_ARTIFACT_DIR


class StudySpec(_Frozen):
    name: str = Field(min_length=1)
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    attack: AttackConfig = AttackConfig()
    search: dict[str, Param] = Field(default_factory=dict)
    objectives: tuple[ObjectiveName, ...] = ("mae_ratio",)
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    storage: StorageSpec = StorageSpec()
    n_trials: int | None = Field(20, gt=0, description="finished trials in the whole study")
    timeout: float | None = Field(None, gt=0, description="seconds per worker")

    @model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        if self.objectives[:1] != ("mae_ratio",) or len(set(self.objectives)) != len(self.objectives):
            raise ValueError("objectives must be [mae_ratio] or [mae_ratio, seconds]")
        fields = AttackConfig.model_fields
        for name, param in self.search.items():
            if name not in fields:
                raise ValueError(f"search.{name} is not an attack setting (allowed: {', '.join(fields)})")
            if name in self.attack.model_fields_set:
                raise ValueError(f"attack.{name} is both fixed and searched; keep one")
            for value in param.corners():
                try:
                    AttackConfig.model_validate({**self.attack.model_dump(), name: value})
                except ValidationError as exc:
                    raise ValueError(f"search.{name} value {value!r}: {exc.errors()[0]['msg']}") from None
        return self

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def run_config(self, params: dict[str, Any]) -> RunConfig:
        """The run a trial with these sampled values performs: fixed settings, then the sampled ones."""
        attack = AttackConfig.model_validate({**self.attack.model_dump(), **params})
        return RunConfig(model=self.model, data=self.data, attack=attack)

    def identity(self) -> dict[str, Any]:
        """What a trial's number means; stored on the study and compared when a worker joins."""
        return {
            "model": self.model.model_dump(mode="json"),
            "data": self.data.model_dump(mode="json"),
            "attack": self.attack.model_dump(mode="json"),
            "search": {k: v.model_dump(mode="json") for k, v in sorted(self.search.items())},
            "objectives": list(self.objectives),
        }

    def fingerprint(self) -> str:
        return fingerprint_of(self.identity())


def fingerprint_of(identity: dict[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_spec(path: Path | str) -> StudySpec:
    """Read and validate a study spec; every problem is one line naming the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"study spec {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"study spec {path} is not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise InputError(f"study spec {path} must be a mapping of settings, got {type(raw).__name__}")
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as exc:
        raise InputError(f"study spec {path}: {_describe(exc)}") from None


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    # A discriminated union puts the tag ('float', 'int', ...) in loc; it is noise for the reader.
    loc = [str(p) for p in first["loc"] if p not in ("float", "int", "categorical")]
    if first["type"] == "value_error" and first["msg"].startswith("Value error, "):
        msg = first["msg"].removeprefix("Value error, ")
        return f"{'.'.join(loc)}: {msg}" if loc else msg
    return describe_validation_error(err) if not loc else _with_loc(err, ".".join(loc))


def _with_loc(err: ValidationError, where: str) -> str:
    first = err.errors()[0]
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    return f"{where}: {msg}{shown}"
