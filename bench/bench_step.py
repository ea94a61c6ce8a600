"""Cost of one matching step against an ordinary training step, of the differentiable CTC against PyTorch's,
and peak memory against clip duration.

A matching step = the parameter gradient with create_graph (the forward and a backward that keeps its
graph) and a backward of the distance to the input; the baseline = the client's own step, native forward
+ backward with `F.ctc_loss`. Both are timed side by side in one process; ratios are what to read (the
machines are noisy). Memory is the peak resident set of a fresh process per configuration on the CPU, the
CUDA peak on a GPU. Writes bench/results/step.json. Regenerate: `make bench` or `python -m bench.bench_step`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from recon_core.attack import Attack
from recon_core.case import build_case
from recon_core.config import AttackConfig, DataConfig, ModelConfig
from recon_core.ctc import ctc_loss
from recon_core.data import load_selection
from recon_core.features import front_end_for
from recon_core.models.presets import build_model
from recon_core.runner import peak_memory_mb, reset_peak_memory

RESULTS = Path(__file__).resolve().parent / "results"
CLIPS = {"1s": "cards-0-0001", "3s": "austen-1-0880"}


def _timed(fn, repeat: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def _case(model: str, preset: str, clip: str, layers: str, device: torch.device):
    net = build_model(ModelConfig(model=model, preset=preset)).to(device)
    (utt,) = load_selection(DataConfig(ids=(clip,)))
    return build_case(net, front_end_for(model), utt, layers, device)


def step_ratio(model: str, preset: str, clip: str, layers: str, repeat: int, device: torch.device) -> dict:
    case = _case(model, preset, clip, layers, device)
    attack = Attack(case, AttackConfig(layers=layers), 0.1)
    params = attack._params(1)
    x = case.x_true.unsqueeze(0).clone().requires_grad_(True)
    net, labels = case.model, case.labels

    def matching() -> None:
        _, total = attack.losses(x, params)
        torch.autograd.grad(total.sum(), x)

    def native() -> None:
        net.zero_grad(set_to_none=True)
        lp = net(x.detach())
        F.ctc_loss(lp.transpose(0, 1), labels[None], torch.tensor([lp.shape[1]]), torch.tensor([len(labels)]),
                   reduction="sum").backward()

    t_match, t_native = _timed(matching, repeat), _timed(native, repeat)
    return {"model": model, "preset": preset, "clip": clip, "frames": int(case.x_true.shape[0]), "layers": layers,
            "matching_s": t_match, "native_s": t_native, "ratio": t_match / t_native}


def ctc_ratio(frames: int, labels: int, repeat: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, frames, 29, generator=gen, requires_grad=True)
    targets = torch.randint(1, 29, (1, labels), generator=gen)
    lin, lout = torch.tensor([frames]), torch.tensor([labels])

    def ours() -> None:
        torch.autograd.grad(ctc_loss(logits.log_softmax(-1), targets, lin, lout).sum(), logits)

    def ours_second_order() -> None:  # what a matching step asks of the CTC: its gradient, differentiated
        (g,) = torch.autograd.grad(ctc_loss(logits.log_softmax(-1), targets, lin, lout).sum(), logits,
                                   create_graph=True)
        torch.autograd.grad(g.pow(2).sum(), logits)

    def native() -> None:
        lp = logits.log_softmax(-1).transpose(0, 1)
        torch.autograd.grad(F.ctc_loss(lp, targets, lin, lout, reduction="sum"), logits)

    t_ours, t_native, t_second = _timed(ours, repeat), _timed(native, repeat), _timed(ours_second_order, repeat)
    return {"frames": frames, "labels": labels, "ours_s": t_ours, "native_s": t_native, "ratio": t_ours / t_native,
            "second_order_s": t_second, "second_order_ratio": t_second / t_native}


def ctc_share(model: str, clip: str, repeat: int) -> float:
    """Fraction of a tiny matching step spent in the CTC (its forward, backward and double backward)."""
    case = _case(model, "tiny", clip, "output", torch.device("cpu"))
    attack = Attack(case, AttackConfig(), 0.1)
    params = attack._params(1)
    x = case.x_true.unsqueeze(0).clone().requires_grad_(True)
    lp = case.model.functional(params, x).detach().requires_grad_(True)
    lengths = torch.tensor([lp.shape[1]]), torch.tensor([len(case.labels)])

    def ctc_part() -> None:
        loss = ctc_loss(lp, case.labels[None], *lengths).sum()
        (g,) = torch.autograd.grad(loss, lp, create_graph=True)
        torch.autograd.grad(g.pow(2).sum(), lp)

    def whole() -> None:
        _, total = attack.losses(x, params)
        torch.autograd.grad(total.sum(), x)

    return _timed(ctc_part, repeat) / _timed(whole, repeat)


def memory_row(model: str, preset: str, clip: str, device: str) -> dict:
    """Peak memory (model, case and three matching steps), in a fresh process so earlier rows do not count."""
    code = ("import sys, torch; from bench.bench_step import _one_memory; "
            f"print(_one_memory({model!r}, {preset!r}, {clip!r}, {device!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    return {"model": model, "preset": preset, "clip": clip, "device": device, "peak_mb": float(out.stdout.split()[-1])}


def _one_memory(model: str, preset: str, clip: str, device: str) -> float:
    dev = torch.device(device)
    reset_peak_memory(dev)
    case = _case(model, preset, clip, "output", dev)
    attack = Attack(case, AttackConfig(max_iter=3, patience=0), 0.1)
    with torch.backends.cudnn.flags(enabled=False):
        attack.run(attack.start([0]))
    return peak_memory_mb(dev)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--full", action=argparse.BooleanOptionalAction, default=True,
                        help="also the full-size presets (a few steps each on a CPU)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    presets = ("tiny", "full") if args.full else ("tiny",)
    steps = []
    with torch.backends.cudnn.flags(enabled=False):
        for model in ("ds1", "ds2"):
            for preset in presets:
                for clip in CLIPS.values():
                    repeat = args.repeat if preset == "tiny" or device.type == "cuda" else 1
                    for layers in ("output", "all") if preset == "tiny" else ("output",):
                        steps.append(step_ratio(model, preset, clip, layers, repeat, device))
    print("matching step / native training step (target <= 10x)")
    for r in steps:
        print(f"  {r['model']} {r['preset']:4} {r['layers']:6} {r['frames']:4d} frames: {r['matching_s']:.3f} s vs "
              f"{r['native_s']:.3f} s = {r['ratio']:.1f}x")
    ctc = [ctc_ratio(frames, labels, args.repeat * 3) for frames, labels in ((100, 20), (300, 60))]
    print("differentiable CTC forward+backward / F.ctc_loss (target <= 2x)")
    for r in ctc:
        print(f"  T={r['frames']}, S={r['labels']}: {r['ours_s'] * 1e3:.2f} ms vs {r['native_s'] * 1e3:.2f} ms = "
              f"{r['ratio']:.1f}x; with the double backward of a matching step: {r['second_order_s'] * 1e3:.2f} ms = "
              f"{r['second_order_ratio']:.1f}x")
    share = {m: ctc_share(m, CLIPS["1s"], args.repeat) for m in ("ds1", "ds2")}
    print("CTC's share of a tiny matching step: " + ", ".join(f"{m} {v:.0%}" for m, v in share.items()))
    memory = [memory_row(m, p, c, device.type) for m in ("ds1", "ds2") for p in presets for c in CLIPS.values()]
    print("peak memory of the attack (3 steps, output layer)")
    for r in memory:
        print(f"  {r['model']} {r['preset']:4} {r['clip']:14}: {r['peak_mb']:.0f} MB ({r['device']})")
    RESULTS.mkdir(exist_ok=True)
    meta = {"device": str(device), "threads": args.threads, "torch": torch.__version__}
    payload = {"meta": meta, "steps": steps, "ctc": ctc, "ctc_share": share, "memory": memory}
    (RESULTS / "step.json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
