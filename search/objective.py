"""The objective of a study: one trial = one `reconstruct` run with the sampled attack settings.

It knows nothing of storages or workers. Every `report_every` iterations it reports the objective so far
(the mean mae_ratio of the finished clips and of the clip under attack as if stopped now), on the scale of
the trial's final value, so the pruner can stop a trial that stopped improving and is worse than the
others. It records per-clip metrics and cost as user attributes, and turns every way a trial can go wrong
(non-finite loss or objective, CUDA out of memory, any exception) into a `TrialFailed` carrying a one-line
reason, kept in the trial's `fail_reason` attribute; the worker catches exactly that type and goes on with
the next trial.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import socket
import time
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore

from recon_core.config import RunConfig
from recon_core.results import SampleResult
from recon_core.runner import objective_value, reconstruct
from search.artifacts import upload_sample
from search.spec import StudySpec

log = logging.getLogger(__name__)


class TrialFailed(Exception):
    """A trial that cannot give a value; the message is the reason stored on the trial."""


class Objective:
    """Callable for `study.optimize`; returns mae_ratio, or (mae_ratio, seconds per sample) for a Pareto front."""

    def __init__(self, spec: StudySpec, device: torch.device, store: FileSystemArtifactStore | None,
                 worker_index: int = 0) -> None:
        self.spec, self.device, self.store = spec, device, store
        self.worker = {"host": socket.gethostname(), "pid": os.getpid(), "index": worker_index,
                       "device": str(device)}

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        trial.set_user_attr("worker", self.worker)
        started = time.perf_counter()
        try:
            params = {name: param.suggest(trial, name) for name, param in self.spec.search.items()}
            cfg = self.spec.run_config(params)
            trial.set_user_attr("run_config", cfg.model_dump(mode="json"))
            log.info("trial %d starts: %s", trial.number, params or "no searched settings")
            results = self._attack(trial, cfg)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "worker stopped (interrupt or SIGTERM)")
            raise
        except TrialFailed as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        except Exception as exc:  # any failure of one trial must not stop the worker
            reason = _reason(exc)
            trial.set_user_attr("fail_reason", reason)
            raise TrialFailed(reason) from exc
        finally:
            self._free_memory()
        trial.set_user_attr("wall_seconds", time.perf_counter() - started)
        return self._finish(trial, results, cfg.model.model)

    def _attack(self, trial: optuna.Trial, cfg: RunConfig) -> list[SampleResult]:
        report = not self.spec.multi_objective
        steps = [0]
        results: list[SampleResult] = []

        def on_step(step: int, loss: float, ratio: float) -> None:
            steps[0] = step
            if not math.isfinite(loss):
                raise TrialFailed(f"non-finite matching loss ({loss}) at iteration {step}")
            if report:
                so_far = (sum(r.best.mae_ratio for r in results) + ratio) / (len(results) + 1)
                trial.report(so_far, step)
                if trial.should_prune():
                    trial.set_user_attr("iterations", step)
                    raise optuna.TrialPruned(f"mae_ratio so far {so_far:.4g} stopped improving (iteration {step})")

        try:
            for result in reconstruct(cfg, device=self.device, on_step=on_step,
                                      report_every=self.spec.pruner.report_every):
                results.append(result)
            return results
        except torch.cuda.OutOfMemoryError:
            raise TrialFailed(f"CUDA out of memory on {self.device} after iteration {steps[0]}") from None

    def _finish(self, trial: optuna.Trial, results: list[SampleResult], model: str) -> float | tuple[float, float]:
        value = objective_value(results)
        seconds = sum(r.seconds for r in results)
        trial.set_user_attr("clips", [_clip_row(r) for r in results])
        trial.set_user_attr("seconds", seconds)
        trial.set_user_attr("peak_memory_mb", max((r.peak_memory_mb for r in results), default=0.0))
        trial.set_user_attr("device", results[0].device if results else str(self.device))
        trial.set_user_attr("iterations", sum(r.best.iterations for r in results))
        if not results:
            raise _fail(trial, "no clip was attacked (every selected clip was skipped)")
        diverged = [f"{r.utt_id} ({r.best.stop_reason})" for r in results if not math.isfinite(r.best.best_loss)]
        if diverged:
            raise _fail(trial, f"non-finite matching loss on {', '.join(diverged)}")
        if not math.isfinite(value):
            raise _fail(trial, f"non-finite objective (mean mae_ratio {value})")
        if self.store is not None:
            for result in results:
                try:
                    upload_sample(trial, self.store, result, model)
                except Exception as exc:  # a missing picture must not lose the trial's value
                    log.warning("trial %d: artifacts of %s not stored: %s", trial.number, result.utt_id, _reason(exc))
        if self.spec.multi_objective:
            return value, seconds / len(results)
        return value

    def _free_memory(self) -> None:
        if self.device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()


def _fail(trial: optuna.Trial, reason: str) -> TrialFailed:
    trial.set_user_attr("fail_reason", reason)
    return TrialFailed(reason)


def _clip_row(result: SampleResult) -> dict[str, Any]:
    best = result.best
    return {"utt_id": result.utt_id, "mae_ratio": best.mae_ratio, "feature_mae": best.feature_mae,
            "feature_snr_db": best.feature_snr_db, "cosine_similarity": best.cosine_similarity,
            "best_loss": best.best_loss, "iterations": best.iterations, "stop_reason": best.stop_reason,
            "seconds": result.seconds, "peak_memory_mb": result.peak_memory_mb}


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
