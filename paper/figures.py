"""The report's figures, drawn from the CSV rows (never from in-memory results), sized for one column:
3.4 inches wide, 8-point text, 200 dpi."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from paper.tables import number  # noqa: E402

Rows = list[dict[str, str]]
WIDTH = 3.4
plt.rcParams.update({"font.size": 8, "axes.titlesize": 8, "legend.fontsize": 7, "axes.grid": True,
                     "grid.alpha": 0.3})
_NUMERIC_SWEEPS = {"lr": "learning rate", "top_grad": "top-gradient fraction"}
_COLOURS = {"ds1": "tab:blue", "ds2": "tab:orange"}


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=200)
    plt.close(fig)
    return path


def sweep_figure(rows: Rows, sweep: str, path: Path) -> Path:
    """mae_ratio (mean +- std over clips and restarts) per model along one sweep, with the original DS1's
    MAE over its random start's where it reported one; below 1 = better than the random start."""
    fig, ax = plt.subplots(figsize=(WIDTH, 2.4))
    numeric = sweep in _NUMERIC_SWEEPS
    values = list(dict.fromkeys(r["value"] for r in rows if r["sweep"] == sweep))
    where = {v: (float(v) if numeric else i) for i, v in enumerate(values)}
    for k, model in enumerate(sorted({r["model"] for r in rows})):
        mine = [r for r in rows if r["sweep"] == sweep and r["model"] == model and number(r["clips"]) > 0]
        shift = 0 if numeric else (k - 0.5) * 0.15
        ax.errorbar([where[r["value"]] + shift for r in mine], [number(r["mae_ratio_mean"]) for r in mine],
                    [number(r["mae_ratio_std"]) for r in mine], marker="o", ms=3, capsize=2, lw=1,
                    color=_COLOURS.get(model), label=f"{model.upper()} (ours)", ls="-" if numeric else "none")
        ref = [r for r in mine if not math.isnan(number(r["ref_mae_ratio"]))]
        if ref:
            ax.plot([where[r["value"]] for r in ref], [number(r["ref_mae_ratio"]) for r in ref], marker="s",
                    ms=3, mfc="none", ls="--" if numeric else "none", lw=1, color="black",
                    label=f"{model.upper()} original (MAE / random-start MAE)")
    ax.axhline(1.0, color="grey", lw=0.8, ls=":", label="random start")
    if numeric:
        ax.set_xscale("log" if sweep == "lr" else "linear")
        ax.set_xlabel(_NUMERIC_SWEEPS[sweep])
    else:
        ax.set_xticks(range(len(values)), values)
        ax.set_xlabel(sweep.replace("_", " "))
    ax.set_ylabel("mae_ratio")
    ax.legend(loc="best", frameon=False)
    return _save(fig, path)


def failure_mode_figure(rows: Rows, path: Path) -> Path:
    """DS2 mae_ratio with each suspected failure mode switched off alone (horizontal bars, mean +- std)."""
    mine = [r for r in rows if r["sweep"] in ("settings", "failure_modes") and number(r["clips"]) > 0]
    mine = [r for i, r in enumerate(mine) if r["run"] not in {m["run"] for m in mine[:i]}]  # each run once
    fig, ax = plt.subplots(figsize=(WIDTH, 0.4 * len(mine) + 0.8))
    labels = [textwrap.fill(r["value"] if r["sweep"] == "failure_modes" else f"settings: {r['value']}", 28)
              for r in mine]
    ax.barh(range(len(mine)), [number(r["mae_ratio_mean"]) for r in mine],
            xerr=[number(r["mae_ratio_std"]) for r in mine], color=_COLOURS["ds2"], capsize=2)
    ax.plot([number(r["mae_ratio_uniform_mean"]) for r in mine], range(len(mine)), "kd", mfc="none", ms=4,
            ls="none", label="vs uniform start")
    ax.set_yticks(range(len(mine)), labels)
    ax.invert_yaxis()
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("mae_ratio (1: its random start)")
    ax.legend(frameon=False, loc="lower left")
    return _save(fig, path)


def importance_figure(rows: Rows, path: Path) -> Path:
    """Parameter importances per model, one panel each, one bar per searched setting."""
    models = sorted({r["model"] for r in rows})
    counts = [sum(r["model"] == m for r in rows) for m in models]
    fig, axes = plt.subplots(len(models), 1, figsize=(WIDTH, 0.6 + 0.22 * sum(counts) + 0.45 * len(models)),
                             squeeze=False, height_ratios=counts)
    for ax, model in zip(axes[:, 0], models, strict=True):
        mine = [r for r in rows if r["model"] == model]
        ax.barh(range(len(mine)), [number(r["importance"]) for r in mine], color=_COLOURS.get(model))
        ax.set_yticks(range(len(mine)), [r["setting"].replace("_percentage", "") for r in mine])
        ax.invert_yaxis()
        ax.set_title(f"{model.upper()} study")
    axes[-1, 0].set_xlabel("importance (PED-ANOVA)")
    return _save(fig, path)


def cost_figure(rows: Rows, column: str, label: str, path: Path) -> Path:
    """A cost column against clip duration, one line per model and preset (log scale)."""
    fig, ax = plt.subplots(figsize=(WIDTH, 2.8))
    for key in dict.fromkeys((r["model"], r["preset"]) for r in rows):
        mine = sorted((r for r in rows if (r["model"], r["preset"]) == key), key=lambda r: number(r["duration_s"]))
        ax.plot([number(r["duration_s"]) for r in mine], [number(r[column]) for r in mine], marker="o", ms=3,
                color=_COLOURS.get(key[0]), ls="-" if key[1] == "full" else "--", label=f"{key[0].upper()} {key[1]}")
    ax.set_yscale("log")
    ax.set_xlabel("clip duration (s)")
    ax.set_ylabel(label)
    ax.set_title(f"device: {', '.join(sorted({r['device'] for r in rows}))}")
    ax.legend(frameon=False, ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    return _save(fig, path)


def listening_figure(rows: Rows, path: Path) -> Path:
    """STOI of the reconstruction and of the random start per setting (mean over clips)."""
    keys = list(dict.fromkeys((r["model"], r["setting"]) for r in rows))
    fig, ax = plt.subplots(figsize=(WIDTH, 0.5 * len(keys) + 1.2))
    for offset, column, name in ((-0.2, "stoi", "reconstruction"), (0.2, "stoi_random_start", "random start")):
        means = [_mean([number(r[column]) for r in rows if (r["model"], r["setting"]) == k]) for k in keys]
        ax.barh([i + offset for i in range(len(keys))], means, height=0.4, label=name,
                color="tab:green" if column == "stoi" else "lightgrey")
    ax.set_yticks(range(len(keys)), [textwrap.fill(f"{m.upper()} {s}", 22) for m, s in keys])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("STOI vs the truth's Griffin-Lim")
    ax.legend(frameon=False, ncols=2, loc="upper center", bbox_to_anchor=(0.4, -0.3))
    return _save(fig, path)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def slice_figure(rows: Rows, model: str, path: Path) -> Path | None:
    """mae_ratio of every completed trial against each searched setting, three panels a row (None: no trial)."""
    mine = [r for r in rows if r["model"] == model]
    params = [c for c in (mine[0] if mine else {}) if c.startswith("param_") and any(r[c] != "" for r in mine)]
    if not params:
        return None
    ncols = min(3, len(params))
    nrows = -(-len(params) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH, 1.3 * nrows + 0.4), sharey=True, squeeze=False)
    for ax, column in zip(axes.flat, params, strict=False):
        values = [r[column] for r in mine]
        numeric = all(_is_float(v) for v in values)
        choices = sorted(set(values))
        xs = [float(v) if numeric else choices.index(v) for v in values]
        ax.scatter(xs, [number(r["mae_ratio"]) for r in mine], s=8, color=_COLOURS.get(model))
        if column == "param_lr":
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(choices)), choices)
        ax.set_xlabel(column.removeprefix("param_").replace("_percentage", ""), fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes.flat[len(params):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("mae_ratio")
    fig.suptitle(f"{model.upper()}: {mine[0]['study']}", fontsize=8)
    return _save(fig, path)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
