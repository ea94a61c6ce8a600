"""A study's report as files: trials.csv, importances, PNG plots (matplotlib) and a markdown summary.

Plots that a study cannot support yet (importances need two completed trials with varied settings, a
slice plot needs searched settings) are left out with the reason in the summary instead of failing.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import optuna  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402
from optuna.visualization import matplotlib as ovm  # noqa: E402

from search.export import best_trial, export_text  # noqa: E402

USER_COLUMNS = ("seconds", "iterations", "peak_memory_mb", "device", "fail_reason")
PLOTS: dict[str, Callable[..., Any]] = {
    "optimization_history": ovm.plot_optimization_history,
    "param_importances": ovm.plot_param_importances,
    "slice": ovm.plot_slice,
    "parallel_coordinate": ovm.plot_parallel_coordinate,
}


def write_report(study: optuna.Study, out: Path) -> Path:
    """Write every part into `out`; returns the summary's path."""
    out.mkdir(parents=True, exist_ok=True)
    _write_trials_csv(study, out / "trials.csv")
    target, target_name = _first_objective(study)
    importances, problems = _importances(study, target)
    (out / "importances.json").write_text(json.dumps(importances, indent=2) + "\n")
    for name, plot in PLOTS.items():
        try:
            ax = plot(study, target=target, target_name=target_name)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            problems[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            plt.close("all")
            continue
        first = ax.flat[0] if hasattr(ax, "flat") else ax
        first.figure.savefig(out / f"{name}.png", dpi=90, bbox_inches="tight")
        plt.close(first.figure)
    summary = out / "summary.md"
    summary.write_text(_summary(study, importances, problems))
    return summary


def _write_trials_csv(study: optuna.Study, path: Path) -> None:
    """One row per trial: state, objective values, searched settings, cost and failure reason (no pandas)."""
    trials = study.get_trials(deepcopy=False)
    metrics = study.metric_names or [f"value_{i}" for i in range(len(study.directions))]
    params = sorted({p for t in trials for p in t.params})
    columns = ["number", "state", *metrics, *(f"params_{p}" for p in params), "datetime_start", "duration_s",
               *USER_COLUMNS, "worker_host", "worker_pid"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for t in trials:
            worker = t.user_attrs.get("worker") or {}
            writer.writerow({
                "number": t.number, "state": t.state.name,
                **dict(zip(metrics, t.values or [], strict=False)),
                **{f"params_{p}": t.params.get(p) for p in params},
                "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
                "duration_s": t.duration.total_seconds() if t.duration else None,
                **{c: t.user_attrs.get(c) for c in USER_COLUMNS},
                "worker_host": worker.get("host"), "worker_pid": worker.get("pid"),
            })


def _first_objective(study: optuna.Study) -> tuple[Callable[[FrozenTrial], float] | None, str]:
    """Plots of a Pareto study show its first objective (mae_ratio), which is what export picks by."""
    name = (study.metric_names or ["Objective Value"])[0]
    if len(study.directions) == 1:
        return None, name
    return (lambda t: t.values[0]), name


def _importances(study: optuna.Study, target: Callable[[FrozenTrial], float] | None) -> tuple[dict, dict]:
    try:
        return dict(optuna.importance.get_param_importances(study, target=target)), {}
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return {}, {"importances": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}


def _summary(study: optuna.Study, importances: dict[str, float], problems: dict[str, str]) -> str:
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    lines = [f"# Study `{study.study_name}`", "",
             "Trials: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n), ""]
    if counts["complete"]:
        best = best_trial(study)
        lines += ["## Best trial", "", f"Trial {best.number}: " + ", ".join(
            f"{n} = {v:.4g}" for n, v in zip(study.metric_names or ["value"], best.values, strict=False)), "",
            "```yaml", export_text(study, best).rstrip(), "```", ""]
    if importances:
        lines += ["## Parameter importances", "", "| setting | importance |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in importances.items()] + [""]
    failures = [t for t in trials if t.state == TrialState.FAIL]
    if failures:
        lines += ["## Failed trials", ""]
        lines += [f"- trial {t.number}: {t.user_attrs.get('fail_reason', 'no reason recorded')}" for t in failures]
        lines += [""]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    if pruned:
        steps = sorted(t.last_step or 0 for t in pruned)
        lines += [f"Pruning stopped {len(pruned)} trials early (median at iteration {steps[len(steps) // 2]}).", ""]
    lines += ["## Plots", ""]
    lines += [f"![{name}]({name}.png)" if name not in problems else f"- {name}: not drawn ({problems[name]})"
              for name in PLOTS]
    if "importances" in problems:
        lines += [f"- importances: not computed ({problems['importances']})"]
    return "\n".join(lines) + "\n"
