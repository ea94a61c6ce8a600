"""Attack every selected clip of a run config: the loop shared by `asr-recon run` and the search objective."""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from recon_core.attack import Attack, AttackState, restart_seeds
from recon_core.case import Case, InfeasibleClip, build_case, select_layers
from recon_core.config import RunConfig
from recon_core.data import Utterance, load_selection
from recon_core.errors import InputError
from recon_core.features import front_end_for
from recon_core.metrics import current_ratio, restart_results, summarise
from recon_core.models.base import ReconModel
from recon_core.models.presets import build_model
from recon_core.outputs import RunFolder, read_metrics, setup_logging, summary_table
from recon_core.results import SampleResult
from recon_core.span import is_recurrent_weight

log = logging.getLogger(__name__)

class Interrupted(Exception):
    """A stop was requested (SIGTERM, Ctrl-C); the clip under attack was checkpointed first."""


#: (global step over all clips, best matching loss so far of the clip under attack, the mae_ratio that clip
#: would score if stopped now); may raise to abort
StepCallback = Callable[[int, float, float], None]


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when one is visible (CUDA_VISIBLE_DEVICES decides which), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise InputError(f"device {name!r} is not one of auto, cpu, cuda, cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r} was asked for but no CUDA device is visible")
    return torch.device(name)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's counter, or the process's resident-set high-water mark (Linux clear_refs;
    without it the CPU peak is the process's, inherited across fork and often set by library imports)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb(device: torch.device) -> float:
    """CUDA's peak allocation on a GPU; on the CPU the resident set's high-water mark since the last reset."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _double_backward_ready(device: torch.device) -> contextlib.AbstractContextManager:
    """cuDNN kernels have no double backward: keep them off while matching on a GPU."""
    return torch.backends.cudnn.flags(enabled=False) if device.type == "cuda" else contextlib.nullcontext()


@dataclass(frozen=True)
class Prepared:
    """What `preflight` checked and built, handed on so that a run does not scan the data and build the
    model a second time (seconds for a LibriSpeech tree or the full presets)."""

    device: torch.device
    utts: list[Utterance]
    model: ReconModel


def preflight(cfg: RunConfig, device: str) -> Prepared:
    """Everything that can be wrong with a config, checked before anything is written: the device, the clip
    selection, the model and weights file, the matched layers, a prior the model cannot serve."""
    dev = resolve_device(device)
    utts = load_selection(cfg.data)
    model = build_model(cfg.model)
    names = select_layers(model, cfg.attack.layers)
    if cfg.attack.objective == "span" and not any(is_recurrent_weight(n) for n in names):
        raise InputError(f"objective span needs a recurrent weight (weight_ih/weight_hh) among the matched layers; "
                         f"layers {cfg.attack.layers!r} has none (use all, or e.g. grus.0)")
    if cfg.attack.bn_stats_weight > 0 and not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                   for m in model.modules()):
        raise InputError(f"bn_stats_weight {cfg.attack.bn_stats_weight} needs a model with batch norm; "
                         f"{cfg.model.model} has none (use 0)")
    return Prepared(dev, utts, model)


def reconstruct(
    cfg: RunConfig,
    *,
    device: str | torch.device = "cpu",
    on_step: StepCallback | None = None,
    report_every: int = 10,
    folder: RunFolder | None = None,
    checkpoint_every: int = 50,
    stop: threading.Event | None = None,
    prepared: Prepared | None = None,
) -> Iterator[SampleResult]:
    """Yield one SampleResult per selected clip. With a folder, finished clips are skipped, a half-done
    clip continues from its checkpoint, and every result is written before the next clip starts. Once
    `stop` is set, the clip under attack is checkpointed within a few iterations and Interrupted raised.
    `prepared` (from `preflight` of the same cfg) replaces `device` and saves the scan and the build."""
    if prepared is not None:
        dev, utts, model = prepared.device, prepared.utts, prepared.model.to(prepared.device)
    else:
        dev = device if isinstance(device, torch.device) else resolve_device(device)
        utts = load_selection(cfg.data)
        model = build_model(cfg.model).to(dev)
    front_end = front_end_for(cfg.model.model)
    base_lr = cfg.attack.resolved_lr(cfg.model.model)
    seeds = restart_seeds(cfg.attack)
    done = folder.done_ids() if folder else set()
    every = math.gcd(report_every, checkpoint_every) if folder else report_every
    for index, utt in enumerate(utts):
        if utt.utt_id in done:
            log.info("%s already finished, skipped", utt.utt_id)
            continue
        try:
            case = build_case(model, front_end, utt, cfg.attack.layers, dev)
        except InfeasibleClip as exc:
            log.warning("skipped: %s", exc)
            if folder:
                folder.record_skip(utt, str(exc))
            continue
        attack = Attack(case, cfg.attack, base_lr)
        resumed = folder.load_state(utt.utt_id, dev) if folder else None
        state = resumed or attack.start(seeds)
        if resumed:
            log.info("%s resumed at iteration %d", utt.utt_id, resumed.iteration)
        reset_peak_memory(dev)
        started, spent_before = time.perf_counter(), state.seconds
        offset = index * cfg.attack.max_iter

        def hook(iteration: int, st: AttackState, utt_id: str = utt.utt_id, t0: float = started,
                 spent: float = spent_before, offset: int = offset, case: Case = case) -> None:
            st.seconds = spent + time.perf_counter() - t0
            stopping = stop is not None and stop.is_set()
            if folder and (iteration % checkpoint_every == 0 or stopping):
                folder.save_state(utt_id, st)
            if stopping:
                raise Interrupted(f"stopped at iteration {iteration} of {utt_id}")
            if on_step and iteration % report_every == 0:
                on_step(offset + iteration, float(st.best_loss.min()), current_ratio(case, st))

        with _double_backward_ready(dev):
            state = attack.run(state, hook, every)
        state.seconds = spent_before + time.perf_counter() - started
        restarts = restart_results(case, state, seeds)
        best = next(r.restart for r in restarts if r.best)
        result = SampleResult(
            utt_id=utt.utt_id,
            transcript=utt.transcript,
            duration_ms=utt.duration_ms,
            restarts=restarts,
            x_true=case.x_true.cpu(),
            x_recon=state.best_x[best].cpu(),
            loss_history=torch.stack(state.history).cpu() if state.history else torch.empty(0, len(seeds)),
            seconds=state.seconds,
            peak_memory_mb=peak_memory_mb(dev),
            device=str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        )
        if folder:
            folder.finish(result, cfg.model.model)
        yield result


def objective_value(results: list[SampleResult]) -> float:
    """Mean over clips of the best restart's mae_ratio (nan if any clip's is nan): what studies minimise."""
    if not results:
        return math.nan
    return sum(r.best.mae_ratio for r in results) / len(results)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM and Ctrl-C set an event instead of killing the process mid-write."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_with_progress(cfg: RunConfig, folder: RunFolder, prepared: Prepared, checkpoint_every: int = 50
                      ) -> dict | None:
    """`asr-recon run`: attack into a run folder with a progress bar and a log file, then print and save
    the summary (mean and std over all samples of the folder, resumed ones included). None when a signal
    stopped it (after a checkpoint: the same command resumes)."""
    console = Console(stderr=True)
    setup_logging(folder.log_file, console)
    log.info("run folder %s, device %s, %d torch threads", folder.path, prepared.device, torch.get_num_threads())
    n = len(prepared.utts)
    a = cfg.attack
    objective = "span residual" if a.objective == "span" else f"{a.distance} (top-grad {a.top_grad_percentage:g})"
    log.info("%s/%s/%s on %d clips: lr %g, max_iter %d, %s over %s layers, %d restarts (all settings in "
             "config.yaml)", cfg.model.model, cfg.model.variant, cfg.model.preset, n, a.resolved_lr(cfg.model.model),
             a.max_iter, objective, a.layers if isinstance(a.layers, str) else ",".join(a.layers), a.n_seeds)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress, _stop_on_signals() as stop:
        samples = progress.add_task("samples", total=n)
        steps = progress.add_task("iterations", total=n * cfg.attack.max_iter)

        def on_step(step: int, loss: float, ratio: float) -> None:
            progress.update(steps, completed=step, description=f"iterations (best loss {loss:.4g})")

        results = reconstruct(cfg, on_step=on_step, folder=folder, checkpoint_every=checkpoint_every, stop=stop,
                              prepared=prepared)
        try:
            for result in results:
                _log_result(result)
                progress.advance(samples)
        except Interrupted as exc:
            log.warning("%s; checkpoint written, run the same command to resume", exc)
            return None
    summary = summarise(read_metrics(folder.metrics))
    folder.write_summary(summary)
    console.print(summary_table(summary, f"{cfg.model.model} {cfg.model.preset}: best restart per sample"))
    log.info("results in %s", folder.path)
    return summary


def _log_result(result: SampleResult) -> None:
    best = result.best
    log.info("%s: mae_ratio %.3f (feature MAE %.3f vs random start %.3f; raw %.3f), SNR %.2f dB, loss %.3g, "
             "%d iterations (%s), %.1f s", result.utt_id, best.mae_ratio, best.feature_mae, best.random_start_mae,
             best.feature_mae_raw, best.feature_snr_db, best.best_loss, best.iterations, best.stop_reason,
             result.seconds)
