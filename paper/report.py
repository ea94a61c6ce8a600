"""report.md, rendered only from the files a build wrote (tables/*.csv, notes.json, provenance.json), so that
every number in it is one of the CSVs' and the report can be re-rendered without attacking anything."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from paper.plan import SWEEP_ORDER
from paper.tables import fmt, read_table
from recon_core.atomic import atomic_text

Rows = list[dict[str, str]]
Column = tuple[str, Callable[[dict[str, str]], str]]

_SWEEP_TITLES = {"lr": "Learning rate", "top_grad": "Top-gradient fraction (at the base lr)",
                 "duration": "Clip duration", "distance": "Gradient distance", "layers": "Matched layers"}


def _pm(column: str) -> Callable[[dict[str, str]], str]:
    return lambda r: "-" if r.get(f"{column}_mean", "") == "" else \
        f"{fmt(r[f'{column}_mean'])} ± {fmt(r[f'{column}_std'])}"


def _cell(column: str) -> Callable[[dict[str, str]], str]:
    return lambda r: fmt(r.get(column, ""))


SWEEP_TABLE: list[Column] = [
    ("setting", lambda r: r["value"]), ("clips", _cell("clips")), ("restarts", _cell("restarts")),
    ("mae_ratio", _pm("mae_ratio")), ("vs uniform start", _pm("mae_ratio_uniform")),
    ("feature MAE (raw)", _pm("feature_mae_raw")),
    ("random start MAE (raw)", _cell("random_start_mae_raw_mean")),
    ("original MAE (raw)", _cell("ref_feature_mae_raw")),
    ("original random start", _cell("ref_random_start_mae_raw")), ("original ratio", _cell("ref_mae_ratio")),
    ("SNR dB", _pm("feature_snr_db")), ("s / sample", _cell("seconds_per_sample")),
    ("run", lambda r: f"`{r['run']}`"),
]
#: the settings and failure-mode tables have no original numbers to stand beside
SETTINGS_TABLE: list[Column] = [("model", lambda r: r["model"]), *(c for c in SWEEP_TABLE if "original" not in c[0])]


def md_table(rows: Rows, columns: Sequence[Column]) -> list[str]:
    if not rows:
        return ["(no rows)", ""]
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(f(r) for _, f in columns) + " |" for r in rows]
    return [*lines, ""]


def render(out: Path) -> Path:
    tables = {p.stem: read_table(p) for p in sorted((out / "tables").glob("*.csv"))}
    notes: list[str] = json.loads((out / "notes.json").read_text())
    prov = json.loads((out / "provenance.json").read_text())
    env, budget = prov["environment"], {r["setting"]: r["value"] for r in tables["budget"]}
    lines = [f"# Paper results: `--budget {budget['name']}`", "",
             f"Device: {env['device']} ({env['torch_threads']} torch threads); commit `{prov['git']['commit']}`"
             f"{' (with local changes)' if prov['git']['dirty'] else ''}. Model preset `{budget['preset']}`, "
             f"{budget['max_iter']} iterations, {budget['n_seeds']} restarts, up to {budget['clips_per_bucket']} "
             "clip(s) per duration bucket. Every number below is a cell of `tables/*.csv` (LaTeX: `tables/*.tex`); "
             "configs, seeds and timings are in `provenance.json`. Regenerate: see docs/paper.md.", "",
             "mae_ratio = feature MAE of the reconstruction / MAE of its random start (standardised features); "
             "below 1 is better than the random start. 'vs uniform start' divides by the MAE of the original's "
             "U[-1, 1] start with the same seed instead, which puts settings with another init (the DS2 preset's "
             "`mean`) on the same scale. Mean ± std over clips and restarts.", ""]
    lines += _section_ds1(tables["ds1_sweeps"])
    lines += _section_ds2(tables["ds2_sweeps"], tables["settings"], tables["ds2_failure_modes"])
    lines += _section_studies(tables["importances"], tables["best_configs"], out)
    lines += _section_cost(tables["cost"])
    lines += _section_listening(tables["listening"])
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    path = out / "report.md"
    atomic_text(path, "\n".join(lines))
    return path


def _sweep_tables(rows: Rows) -> list[str]:
    lines = []
    for sweep in SWEEP_ORDER:
        mine = [r for r in rows if r["sweep"] == sweep]
        lines += [f"### {_SWEEP_TITLES[sweep]}", "", *md_table(mine, SWEEP_TABLE)]
    return lines


def _section_ds1(rows: Rows) -> list[str]:
    lines = ["## 1. DS1 reproduction", "",
             "The original's numbers (attack-reference.md) are raw-unit feature MAE of 1-2 s clips at its defaults "
             "(lr 0.5, all output-layer entries, cosine, output layer); they stand beside every point with the same "
             "setting. Compare *ratios*: the original started from U[-1, 1] in raw MFCC units, we start from "
             "U[-1, 1] in standardised units, so raw MAEs have different random-start baselines.", ""]
    for sweep in SWEEP_ORDER:
        lines += [f"![{sweep} sweep](figures/sweep_{sweep}.png)", ""]
    return lines + _sweep_tables(rows)


def _section_ds2(rows: Rows, settings: Rows, failure: Rows) -> list[str]:
    return ["## 2. DS2", "",
            "Original settings against the recommended preset of recon_core/attack_presets.py (DS1's too, for "
            "comparison; DS1's sweeps above keep the original settings, DS2's below vary the preset once it "
            "exists). Then each suspected DS2 failure mode switched off alone from the original settings "
            "(`asr-recon diagnose ds2` measures the modes in depth). The sweep figures of section 1 show DS2 too.",
            "", *md_table(settings, SETTINGS_TABLE), "![DS2 failure modes](figures/ds2_failure_modes.png)", "",
            *md_table(failure, SETTINGS_TABLE), *_sweep_tables(rows)]


def _section_studies(importances: Rows, best: Rows, out: Path) -> list[str]:
    methods = sorted({r["method"] for r in importances})
    lines = ["## 3. Sensitivity (Optuna studies)", "",
             f"Importance method: {'; '.join(methods) if methods else 'none computed'}.", "",
             *md_table(importances, [("model", lambda r: r["model"]), ("study", lambda r: f"`{r['study']}`"),
                                     ("setting", lambda r: r["setting"]), ("importance", _cell("importance"))])]
    if importances:
        lines += ["![importances](figures/importances.png)", ""]
    slices = [f"slice_{r['model']}.png" for r in best if (out / "figures" / f"slice_{r['model']}.png").is_file()]
    lines += [f"![slice plot](figures/{name})" for name in slices]
    lines += ["", "Best configuration found (repeat it: `asr-recon run --config CONFIG`):", "",
              *md_table(best, [("model", lambda r: r["model"]), ("study", lambda r: f"`{r['study']}`"),
                               ("source", lambda r: r["source"]), ("complete / finished trials",
                                                                   lambda r: f"{r['trials_complete']} / "
                                                                             f"{r['trials_finished']}"),
                               ("best trial", _cell("best_trial")), ("mae_ratio", _cell("mae_ratio")),
                               ("settings", lambda r: r.get("settings", "")),
                               ("config", lambda r: f"`{r['config']}`" if r.get("config") else "-")])]
    return lines


def _section_cost(rows: Rows) -> list[str]:
    def to_target(r: dict[str, str]) -> str:
        return fmt(r["iterations_to_target"]) if r["iterations_to_target"] else f"> {r['iterations_measured']}"

    return ["## 4. Cost", "",
            "One restart, no early stop, measured in a fresh process per row. s / sample = setup + s / iteration x "
            "the sweeps' iteration count (an estimate where fewer iterations were measured). Peak MB is the process's "
            "peak resident set on a CPU (imports and the PyTorch runtime included: often reached before the attack), "
            "CUDA's peak allocation on a GPU; attack MB is what the attack adds (resident set sampled every "
            "iteration minus the resident set before the model was built). "
            "Iterations to target: first iteration whose best-so-far reconstruction reaches the target mae_ratio.",
            "", "![seconds per iteration](figures/cost_seconds.png)", "", "![attack memory](figures/cost_memory.png)",
            "", *md_table(rows, [("model", lambda r: r["model"]), ("preset", lambda r: r["preset"]),
                                 ("device", lambda r: r["device"]), ("clip", lambda r: r["utt_id"]),
                                 ("duration s", _cell("duration_s")), ("frames", _cell("frames")),
                                 ("iterations measured", _cell("iterations_measured")),
                                 ("s / iteration", _cell("seconds_per_iteration")), ("setup s", _cell("setup_seconds")),
                                 ("s / sample", lambda r: f"{fmt(r['seconds_per_sample'])} "
                                                          f"(at {r['sample_iterations']} it)"),
                                 ("peak MB", _cell("peak_memory_mb")), ("attack MB", _cell("attack_memory_mb")),
                                 ("iterations to target", lambda r: f"{to_target(r)} (≤ {fmt(r['target_ratio'])})"),
                                 ("last mae_ratio", _cell("mae_ratio_last"))])]


def _section_listening(rows: Rows) -> list[str]:
    wavs = [r for r in rows if r.get("wav_true")]
    lines = ["## 5. Listening and intelligibility", "",
             "STOI (pystoi) of Griffin-Lim audio of the reconstruction against Griffin-Lim audio of the true features, "
             "beside the random start's; feature SNR in dB (standardised features).", "",
             "![STOI](figures/listening_stoi.png)", "",
             *md_table(rows, [("model", lambda r: r["model"]), ("setting", lambda r: r["setting"]),
                              ("clip", lambda r: r["utt_id"]), ("feature SNR dB", _cell("feature_snr_db")),
                              ("SNR random start", _cell("feature_snr_db_random_start")), ("STOI", _cell("stoi")),
                              ("STOI random start", _cell("stoi_random_start"))])]
    if wavs:
        lines += ["WAV pairs:", "", *[f"- {r['model'].upper()} {r['setting']}, {r['utt_id']}: [true]({r['wav_true']}), "
                                      f"[reconstructed]({r['wav_recon']})" for r in wavs], ""]
    return lines

