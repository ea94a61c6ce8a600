"""`asr-recon`: the one command line of the toolkit. Flags are validated here, once, into typed configs.

Every bad input ends as one line on stderr naming the value and what is allowed, with exit code 2.
"""

from __future__ import annotations

import argparse
import functools
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from recon_core.config import AttackConfig, ModelConfig, RunConfig, describe_validation_error, load_run_config
from recon_core.errors import InputError
from search.options import positive

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (no usage dump) and exit code 2 like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _add_data_selection(p: argparse.ArgumentParser) -> None:
    """The seed's selection flags, with both spellings the original scripts used. Flags left out stay out
    of the namespace, so that a --config file's values are only overridden by flags actually given."""
    add = functools.partial(p.add_argument, default=argparse.SUPPRESS)
    add("--data", help="LibriSpeech-layout folder (default: the embedded clips)")
    add("--min-dur", "--batch_min_dur", dest="min_ms", help="shortest clip, ms (inclusive)")
    add("--max-dur", "--batch_max_dur", dest="max_ms", help="longest clip, ms (exclusive)")
    add("--batch-start", dest="start", help="first index of the duration-filtered, id-sorted clips")
    add("--batch-end", dest="end", help="index after the last one (exclusive)")
    add("--ids", help="comma-separated utterance ids instead of a duration bucket")


def _add_config_flags(p: argparse.ArgumentParser, fixed_model: str | None = None) -> None:
    """Every field of ModelConfig and AttackConfig as a flag (both --snake_case, as the seed spelled them, and
    --kebab-case). Values stay strings here: pydantic validates and converts them once, in _run_config."""
    if fixed_model is None:
        p.add_argument("--model", help="ds1 or ds2 (default ds1)")
    for section, cls in (("model", ModelConfig), ("attack", AttackConfig)):
        for name, field in cls.model_fields.items():
            if name == "model":
                continue
            flags = dict.fromkeys([f"--{name}", f"--{name.replace('_', '-')}"])
            kind = argparse.BooleanOptionalAction if field.annotation is bool else "store"
            p.add_argument(*flags, dest=f"{section}.{name}", action=kind, help=field.description)
    p.add_argument("--preset-attack", "--preset_attack", dest="preset_attack",
                   help="named attack settings (original, recommended; span for ds2): over --config, under the flags "
                   "given")
    p.add_argument("--config", type=Path, help="run config YAML (config.yaml of a run, or a study export)")
    p.add_argument("--out", type=Path, help="output folder (default runs/<model>_<timestamp>); reusing one resumes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--checkpoint-every", type=int, default=50, help="iterations between resumable checkpoints")
    p.add_argument("--threads", type=positive(int), default=None,
                   help="torch threads (default: torch's choice, all cores; 1 is fastest for tiny models on a busy "
                        "machine, and when several runs share it)")
    p.set_defaults(fixed_model=fixed_model)
    for action in p._actions:
        if action.dest not in ("help", "device", "checkpoint_every", "fixed_model", "threads"):
            action.default = argparse.SUPPRESS


def _cmd_models(args: argparse.Namespace) -> int:
    from rich.console import Console

    from recon_core.models.presets import describe_models

    Console().print(describe_models())
    return 0


# ---- data -------------------------------------------------------------------------------------------------

_DATA_FIELDS = {"data": "data", "min_ms": "min_ms", "max_ms": "max_ms", "start": "start", "end": "end", "ids": "ids"}


def _data_overrides(args: argparse.Namespace) -> dict[str, Any]:
    given = {field: getattr(args, dest) for dest, field in _DATA_FIELDS.items() if hasattr(args, dest)}
    if "ids" in given:
        given["ids"] = tuple(i.strip() for i in given["ids"].split(",") if i.strip())
    return given


def _cmd_data(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from recon_core.config import DataConfig
    from recon_core.data import DEMO_DIR, load_selection

    utts = load_selection(_validated(DataConfig, _data_overrides(args), "data"))
    table = Table(title=f"{len(utts)} clips from {getattr(args, 'data', DEMO_DIR)}")
    for col in ("id", "duration ms", "sample rate", "transcript"):
        table.add_column(col, justify="right" if col in ("duration ms", "sample rate") else "left")
    for u in utts:
        table.add_row(u.utt_id, f"{u.duration_ms:.0f}", str(u.sample_rate), u.transcript)
    Console().print(table)
    return 0


def _validated(cls: type, values: dict[str, Any], section: str) -> Any:
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        raise InputError(f"{section}.{describe_validation_error(exc)}") from None


# ---- run --------------------------------------------------------------------------------------------------


def _run_config(args: argparse.Namespace) -> RunConfig:
    """--config (if any), then the flags actually given on top, validated once."""
    base = load_run_config(args.config).model_dump() if hasattr(args, "config") else {}
    merged: dict[str, dict[str, Any]] = {k: dict(base.get(k, {})) for k in ("model", "data", "attack")}
    if hasattr(args, "preset_attack"):
        from recon_core.attack_presets import preset_overrides

        model = args.fixed_model or getattr(args, "model", None) or merged["model"].get("model", "ds1")
        merged["attack"].update(preset_overrides(args.preset_attack, model))
    for dest, value in vars(args).items():
        section, _, name = dest.partition(".")
        if section in ("model", "attack") and name:
            merged[section][name] = value
    merged["data"].update(_data_overrides(args))
    if hasattr(args, "model"):
        merged["model"]["model"] = args.model
    if args.fixed_model:
        merged["model"]["model"] = args.fixed_model
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as exc:
        raise InputError(describe_validation_error(exc)) from None


def _cmd_run(args: argparse.Namespace) -> int:
    from recon_core.outputs import RunFolder, default_run_dir
    from recon_core.runner import preflight, run_with_progress

    cfg = _run_config(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    prepared = preflight(cfg, args.device)
    folder = RunFolder(getattr(args, "out", None) or default_run_dir(cfg.model.model), cfg)
    return 0 if run_with_progress(cfg, folder, prepared, args.checkpoint_every) is not None else 130


def add_run_parser(sub: typing.Any, fixed_model: str | None = None) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="reconstruct the selected clips' features from their gradients")
    _add_data_selection(p)
    _add_config_flags(p, fixed_model)
    p.set_defaults(handler=_cmd_run)
    return p


# ---- diagnose ---------------------------------------------------------------------------------------------


def _add_diagnose_parser(sub: typing.Any) -> None:
    """`diagnose ds2`: measurements of why the DS2 attack fails (recon_core/diagnose.py)."""
    p = sub.add_parser("diagnose", help="measure why an attack fails; writes a markdown report")
    p.add_argument("target", choices=["ds2"], help="the model to diagnose")
    _add_data_selection(p)
    p.add_argument("--preset", choices=["tiny", "full"], default="tiny", help="model size (default tiny)")
    p.add_argument("--max-iter", "--max_iter", dest="max_iter", type=int, default=200,
                   help="iterations of each attack compared (default 200)")
    p.add_argument("--out", type=Path, help="folder for report.md, measurements.json and plots")
    p.add_argument("--only-basin", nargs="*", metavar="ATTACK", help="only the attacks started near the truth, "
                   "all or those named (the practical part on the full preset): ds2-output, ds2-all, ds2-all-span, "
                   "ds2-no-conv, ds1-output, ds1-all")
    p.add_argument("--oracle-iters", type=int, default=0, metavar="N", help="beside each gradient-matching basin "
                   "attack, the linearised oracle after N conjugate-gradient iterations (default 0: none)")
    p.add_argument("--runs", type=Path, nargs="+", help="instead: tabulate finished run folders' mae_ratio "
                   "against their own init and against the uniform start")
    p.set_defaults(handler=_cmd_diagnose)


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from recon_core.config import DataConfig
    from recon_core.diagnose import BASIN_ATTACKS, DiagnoseSettings, basin_slug, diagnose_ds2, runs_table

    if args.runs:
        print(runs_table(args.runs))
        return 0
    if args.out is None:
        raise InputError("diagnose needs --out (or --runs)")
    known = [basin_slug(n) for n in BASIN_ATTACKS]
    for name in args.only_basin or ():
        if name not in known:
            raise InputError(f"--only-basin {name!r} is not a basin attack; choose from {', '.join(known)}")
    if args.oracle_iters < 0:
        raise InputError(f"--oracle-iters {args.oracle_iters} is negative; give 0 (no oracle) or more iterations")
    data = _validated(DataConfig, _data_overrides(args), "data")
    diagnose_ds2(DiagnoseSettings(data=data, preset=args.preset, max_iter=args.max_iter, out=args.out,
                                  only_basin=None if args.only_basin is None else tuple(args.only_basin),
                                  oracle_iters=args.oracle_iters))
    print(f"report written to {args.out / 'report.md'}")
    return 0


# ---- paper ------------------------------------------------------------------------------------------------


def _add_paper_parser(sub: typing.Any) -> None:
    """`paper`: every table and figure of the write-up in one command (paper/build.py)."""
    p = sub.add_parser("paper", help="run or reuse what the paper needs; write report.md, tables, figures")
    p.add_argument("--out", type=Path, default=Path("results/paper"), help="output folder (reusing one resumes)")
    p.add_argument("--budget", default="small", choices=["small", "full", "tiny-test"], metavar="{small,full}",
                   help="small: tiny models, CPU, under 30 minutes; full: the original scale (GPU)")
    p.add_argument("--data", type=Path, default=None, help="LibriSpeech-layout folder (default: the embedded clips)")
    p.add_argument("--storage", default=None, help="storage holding the studies/*.yaml studies (default: run "
                   "small ones under --out)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.set_defaults(handler=_cmd_paper)


def _cmd_paper(args: argparse.Namespace) -> int:
    from paper.budget import BUDGETS
    from paper.build import PaperOptions, build_paper

    report = build_paper(PaperOptions(args.out, BUDGETS[args.budget], args.data, args.storage, args.device))
    print(f"report written to {report}")
    return 0


# ---- study / dashboard ------------------------------------------------------------------------------------


def _add_study_parsers(sub: argparse._SubParsersAction) -> None:
    """`study run|launch|export|report` and `dashboard` (the Optuna layer in `search/`)."""
    from search.options import add_worker_arguments
    from search.spec import DEFAULT_ARTIFACT_DIR, DEFAULT_STORAGE

    study = sub.add_parser("study", help="hyperparameter search over attack settings (Optuna)")
    ss = study.add_subparsers(dest="study_command", required=True, parser_class=type(study))
    p = ss.add_parser("run", help="one worker: create or join the spec's study and run trials")
    add_worker_arguments(p)
    p.add_argument("--log-file", type=Path, default=None, help="default: results/logs/STUDY/TIME-w0-PID.log")
    p.set_defaults(handler=_cmd_study_run)
    p = ss.add_parser("launch", help="several workers on one storage (one per GPU, or N CPU workers)")
    add_worker_arguments(p)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--gpus", default=None, help="comma-separated GPU ids, one worker each (e.g. 0,1,2,3)")
    where.add_argument("--workers", type=int, default=None, help="N CPU workers; cores are split between them")
    p.add_argument("--log-dir", type=Path, default=Path("results/logs"), help="per-worker logs go under it")
    p.set_defaults(handler=_cmd_study_launch)
    for name, text in (("export", "write the best trial as a run config YAML"),
                       ("report", "trials.csv, importances, plots and a markdown summary")):
        p = ss.add_parser(name, help=text)
        p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"default: {DEFAULT_STORAGE}")
        p.add_argument("--study-name", required=True)
    ss.choices["export"].add_argument("-o", "--out", type=Path, default=None,
                                      help="default: results/STUDY-best.yaml")
    ss.choices["export"].set_defaults(handler=_cmd_study_export)
    ss.choices["report"].add_argument("--out", type=Path, required=True, help="folder for the report")
    ss.choices["report"].set_defaults(handler=_cmd_study_report)
    p = sub.add_parser("dashboard", help="optuna-dashboard with trial plots and audio")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"default: {DEFAULT_STORAGE}")
    p.add_argument("--artifact-dir", default=DEFAULT_ARTIFACT_DIR, help=f"default: {DEFAULT_ARTIFACT_DIR}")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(handler=_cmd_dashboard)


def _cmd_study_run(args: argparse.Namespace) -> int:
    from search.options import options_from
    from search.worker import run_worker

    return run_worker(options_from(args))


def _cmd_study_launch(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from search.launcher import launch, plan_slots
    from search.options import options_from

    slots = plan_slots(args.gpus, args.workers)
    if args.threads:
        slots = [replace(s, threads=args.threads) for s in slots]
    return launch(options_from(args), slots, args.log_dir)


def _cmd_study_export(args: argparse.Namespace) -> int:
    from search.export import export_best
    from search.study import load_existing

    study = load_existing(args.storage, args.study_name)
    out = args.out or Path("results") / f"{args.study_name}-best.yaml"
    trial = export_best(study, out)
    print(f"trial {trial.number} ({', '.join(f'{v:.4g}' for v in trial.values)}) -> {out}; "
          f"reproduce with: asr-recon run --config {out}")
    return 0


def _cmd_study_report(args: argparse.Namespace) -> int:
    from search.report import write_report
    from search.study import load_existing

    summary = write_report(load_existing(args.storage, args.study_name), args.out)
    print(f"report written to {args.out} (summary: {summary})")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from search.dashboard import serve

    print(f"optuna-dashboard on http://{args.host}:{args.port}/ (storage {args.storage}); Ctrl-C stops it")
    serve(args.storage, args.artifact_dir, args.host, args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="asr-recon", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("models", help="list models and presets with parameter counts")
    p.set_defaults(handler=_cmd_models)
    p = sub.add_parser("data", help="list the clips a selection picks (default: the embedded clips)")
    _add_data_selection(p)
    p.set_defaults(handler=_cmd_data)
    add_run_parser(sub)
    _add_diagnose_parser(sub)
    _add_paper_parser(sub)
    _add_study_parsers(sub)
    return parser


def seed_script_main(model: str, argv: Sequence[str] | None = None) -> int:
    """The original `reconstruct_<model>_run_many_sample.py` command line: `asr-recon run --model <model>`
    under the seed's flag names (--batch-start, --batch_min_dur, --lr, --max_iter, --n_seeds, ...)."""
    parser = _Parser(prog=f"reconstruct_{model}_run_many_sample.py", description=seed_script_main.__doc__)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    run = add_run_parser(sub, fixed_model=model)
    return _dispatch(run.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    return _dispatch(build_parser().parse_args(argv))


def _dispatch(args: argparse.Namespace) -> int:
    handler: Handler = args.handler
    try:
        return handler(args)
    except InputError as exc:
        print(f"asr-recon: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("asr-recon: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
