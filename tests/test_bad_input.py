"""Every kind of bad input, in one place: one line on stderr naming the value, exit code 2, nothing written.

Each case builds what it needs under tmp_path and runs `cli.main` in-process (no interpreter start-up per
case). "Nothing written" means: no run folder, no study storage file, no worker log, no artifact folder.
Cases that are not errors (8 kHz or stereo audio, a clip too long for CTC) are at the end.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

import cli
from recon_core.data import SAMPLE_RATE, scan

DEMO_DIR = Path(__file__).resolve().parents[1] / "recon_core" / "assets" / "demo"
SPEC = {"name": "bad", "data": {"ids": ["cards-0-0001"]}, "attack": {"max_iter": 2},
        "search": {"lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True}}, "pruner": {"type": "none"}}
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/test"
NO_SUCH_ROLE = "postgresql+psycopg://nobody:s3cret-pw@127.0.0.1:5432/test"

Case = Callable[[Path], tuple[list[str], str]]


# ---- helpers that make bad inputs -------------------------------------------------------------------------


def _clips(tmp: Path) -> Path:
    """A writable copy of the embedded clips."""
    dest = tmp / "clips"
    if not dest.exists():
        shutil.copytree(DEMO_DIR, dest)
    return dest


def _run(tmp: Path, *args: str) -> list[str]:
    return ["run", *args, "--max_iter", "1", "--out", str(tmp / "out")] if "--max_iter" not in args else \
        ["run", *args, "--out", str(tmp / "out")]


def _spec(tmp: Path, text: str | None = None, **changes: object) -> str:
    path = tmp / "spec.yaml"
    path.write_text(text if text is not None else yaml.safe_dump({**SPEC, **changes}))
    return str(path)


def _study(tmp: Path, spec: str, *args: str, storage: str | None = None, command: str = "run") -> list[str]:
    storage = storage or f"sqlite:///{tmp / 'studies.db'}"
    extra = ["--log-file", str(tmp / "logs" / "w.log")] if command == "run" else ["--log-dir", str(tmp / "logs")]
    return ["study", command, spec, "--storage", storage, "--artifact-dir", str(tmp / "artifacts"), *extra, *args]


def _trans(tmp: Path, old: str, new: str) -> Path:
    folder = _clips(tmp)
    trans = next(folder.rglob("cards-0.trans.txt"))
    trans.write_text(trans.read_text().replace(old, new), encoding="utf-8")
    return folder


def _corrupt(tmp: Path) -> Path:
    folder = _clips(tmp)
    next(folder.rglob("cards-0-0003.flac")).write_bytes(b"this is not audio at all" * 10)
    return folder


def _extra_audio(tmp: Path) -> Path:
    folder = _clips(tmp)
    shutil.copy(next(folder.rglob("cards-0-0001.flac")), folder / "extra-9-0001.flac")
    return folder


def _empty_audio(tmp: Path) -> Path:
    folder = _clips(tmp)
    trans = next(folder.rglob("cards-0.trans.txt"))
    sf.write(trans.parent / "cards-0-0009.wav", np.zeros(0, dtype="float32"), SAMPLE_RATE)
    with trans.open("a") as f:
        f.write("cards-0-0009 NINE OF CLUBS\n")
    return folder


def _file(tmp: Path, name: str, text: str = "") -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def _folder(tmp: Path, name: str) -> str:
    (tmp / name).mkdir()
    return str(tmp / name)


def _other_run(tmp: Path) -> str:
    """An output folder made by another config (what `run` writes first: its config.yaml)."""
    out = tmp / "other"
    out.mkdir()
    cfg = {"model": {"model": "ds1", "variant": "original", "preset": "tiny", "weight_seed": 0, "weights": None},
           "data": {"data": None, "min_ms": 0.0, "max_ms": float("inf"), "start": 0, "end": None,
                    "ids": ["cards-0-0001"]}}
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    return str(out)


# ---- the cases: (id, builder -> (argv, what the one line must name)) --------------------------------------

CASES: dict[str, Case] = {
    # flags of `run`
    "unknown model": lambda t: (_run(t, "--model", "ds3"), "ds3"),
    "unknown preset": lambda t: (_run(t, "--preset", "huge"), "huge"),
    "unknown distance": lambda t: (_run(t, "--distance", "manhattan"), "manhattan"),
    "unknown layer name": lambda t: (_run(t, "--ids", "cards-0-0001", "--layers", "fc9"), "fc9"),
    "lr zero": lambda t: (_run(t, "--lr", "0"), "lr"),
    "lr negative": lambda t: (_run(t, "--lr", "-1"), "lr"),
    "top_grad_percentage zero": lambda t: (_run(t, "--top_grad_percentage", "0"), "top_grad_percentage"),
    "top_grad_percentage above 1": lambda t: (_run(t, "--top_grad_percentage", "1.5"), "top_grad_percentage"),
    "max_iter zero": lambda t: (_run(t, "--max_iter", "0"), "max_iter"),
    "max_iter not a number": lambda t: (_run(t, "--max_iter", "ten"), "ten"),
    "unknown device": lambda t: (_run(t, "--device", "tpu"), "tpu"),
    "threads zero": lambda t: (_run(t, "--threads", "0"), "threads"),
    "unknown flag": lambda t: (_run(t, "--no-such-flag"), "--no-such-flag"),
    "weights file missing": lambda t: (_run(t, "--weights", str(t / "nowhere.pt")), "nowhere.pt"),
    # data selection
    "batch start after end": lambda t: (_run(t, "--batch-start", "3", "--batch-end", "1"), "batch end 1"),
    "empty duration bucket": lambda t: (_run(t, "--batch_min_dur", "9000"), "9000"),
    "min duration above max": lambda t: (_run(t, "--batch_min_dur", "2000", "--batch_max_dur", "1000"), "1000"),
    "unknown utterance id": lambda t: (_run(t, "--ids", "nobody-0-0000"), "nobody-0-0000"),
    "missing data folder": lambda t: (_run(t, "--data", str(t / "no-such-folder")), "no-such-folder"),
    "folder without audio": lambda t: (_run(t, "--data", _folder(t, "empty")), "no .flac"),
    "corrupt audio": lambda t: (_run(t, "--data", str(_corrupt(t))), "cards-0-0003.flac cannot be read"),
    "empty audio": lambda t: (_run(t, "--data", str(_empty_audio(t))), "cards-0-0009.wav is empty"),
    "transcript missing": lambda t: (_run(t, "--data", str(_extra_audio(t))), "extra-9-0001.flac has no transcript"),
    "transcript with digits": lambda t: (_run(t, "--data", str(_trans(t, "TEN OF CLUBS", "10 OF CLUBS"))),
                                         "outside the alphabet"),
    "transcript with accents": lambda t: (_run(t, "--data", str(_trans(t, "TEN OF CLUBS", "CAFÉ"))), "é"),
    # run config files and output folders
    "run config missing": lambda t: (_run(t, "--config", str(t / "missing.yaml")), "missing.yaml"),
    "run config YAML syntax": lambda t: (_run(t, "--config", _file(t, "c.yaml", "attack: {lr: [0.1\n")),
                                         "not valid YAML"),
    "run config unknown field": lambda t: (_run(t, "--config", _file(t, "c.yaml", "attack: {learning_rate: 1}\n")),
                                           "learning_rate"),
    "run config wrong type": lambda t: (_run(t, "--config", _file(t, "c.yaml", "attack: {max_iter: many}\n")),
                                        "many"),
    "resume into another config's folder": lambda t: (
        ["run", "--ids", "cards-0-0001", "--max_iter", "3", "--out", _other_run(t)], "attack"),
    # study specs
    "study spec missing": lambda t: (_study(t, str(t / "nospec.yaml")), "nospec.yaml"),
    "study spec YAML syntax": lambda t: (_study(t, _spec(t, "name: x\nsearch: {lr: [\n")), "not valid YAML"),
    "study spec unknown field": lambda t: (_study(t, _spec(t, n_trails=5)), "n_trails: unknown field"),
    "study spec wrong type": lambda t: (_study(t, _spec(t, n_trials="many")), "n_trials"),
    "study spec search of no setting": lambda t: (
        _study(t, _spec(t, search={"learning_rate": {"type": "float", "low": 0.1, "high": 1}})), "learning_rate"),
    "study spec range outside setting": lambda t: (
        _study(t, _spec(t, search={"top_grad_percentage": {"type": "float", "low": 0.5, "high": 2}})),
        "top_grad_percentage"),
    # storages
    "storage not a URL": lambda t: (_study(t, _spec(t), storage="studies"), "'studies'"),
    "storage unreachable": lambda t: (_study(t, _spec(t), storage=UNREACHABLE), "127.0.0.1:1"),
    "storage role and password rejected": lambda t: (_study(t, _spec(t), storage=NO_SUCH_ROLE), "nobody"),
    "export from a storage file that does not exist": lambda t: (
        ["study", "export", "--storage", str(t / "none.db"), "--study-name", "x"], "none.db does not exist"),
    "export of a study not in the storage": lambda t: (
        ["study", "export", "--storage", _file(t, "s.db"), "--study-name", "x"], "'x' is not in"),
    "worker count zero": lambda t: (_study(t, _spec(t), "--workers", "0", command="launch"), "--workers 0"),
    "n-trials zero": lambda t: (_study(t, _spec(t), "--n-trials", "0"), "'0' must be positive"),
    # devices
    "launch on a GPU that does not exist": lambda t: (_study(t, _spec(t), "--gpus", "17", command="launch"), "17"),
    "worker on CUDA without one": lambda t: (_study(t, _spec(t), "--device", "cuda:17"), "cuda:17"),
    # dashboard
    "dashboard artifact folder missing": lambda t: (
        ["dashboard", "--storage", _file(t, "s.db"), "--artifact-dir", str(t / "no" / "such"), "--port", "1"],
        "no/such"),
    "dashboard storage file missing": lambda t: (
        ["dashboard", "--storage", str(t / "nothing.db"), "--artifact-dir", str(t), "--port", "1"], "nothing.db"),
}


def _written(tmp: Path) -> list[str]:
    """What a failed command left behind: anything but the inputs the case made."""
    inputs = {"clips", "spec.yaml", "c.yaml", "other", "empty", "s.db"}
    left = [p.name for p in tmp.iterdir() if p.name not in inputs and not p.name.startswith("s.db-")]
    other = tmp / "other"
    if other.exists():
        left += [f"other/{p.name}" for p in other.iterdir() if p.name != "config.yaml"]
    return left


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_nothing_written(case: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a default path (results/...) would land here, and be caught below
    argv, named = CASES[case](tmp_path)
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, lines
    assert named in lines[0], lines[0]
    assert "s3cret-pw" not in lines[0], "a password is never printed"
    assert _written(tmp_path) == [], f"left behind: {_written(tmp_path)}"


def test_the_suite_has_at_least_25_distinct_cases() -> None:
    assert len(CASES) >= 25


# ---- not errors: converted or skipped, with a warning ----------------------------------------------------


def _one_clip(folder: Path, wave: np.ndarray, rate: int) -> Path:
    folder.mkdir()
    sf.write(folder / "s-0-0001.wav", wave, rate)
    (folder / "s-0.trans.txt").write_text("s-0-0001 TEN OF CLUBS\n")
    return folder


def test_8khz_audio_is_resampled_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wave = np.sin(np.linspace(0, 2000, 8000)).astype("float32") * 0.1
    (utt,) = scan(_one_clip(tmp_path / "8k", wave, 8000))
    with caplog.at_level(logging.WARNING, logger="recon_core.data"):
        loaded = utt.load()
    assert abs(loaded.numel() - 16000) <= 1
    assert any("8000 Hz" in r.getMessage() and "resampled" in r.getMessage() for r in caplog.records), caplog.text


def test_stereo_audio_is_downmixed_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mono = np.sin(np.linspace(0, 2000, 16000)).astype("float32") * 0.1
    (utt,) = scan(_one_clip(tmp_path / "stereo", np.stack([mono, mono], axis=1), SAMPLE_RATE))
    with caplog.at_level(logging.WARNING, logger="recon_core.data"):
        loaded = utt.load()
    assert loaded.ndim == 1 and loaded.numel() == 16000
    assert any("2 channels" in r.getMessage() for r in caplog.records), caplog.text


def test_ctc_infeasible_clip_is_skipped_and_listed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = _trans(tmp_path, "TEN OF CLUBS", "A B " * 200)
    out = tmp_path / "out"
    assert cli.main(["run", "--data", str(folder), "--ids", "cards-0-0001", "--max_iter", "1", "--out", str(out)]) == 0
    skipped = (out / "skipped.csv").read_text()
    assert "cards-0-0001" in skipped and "CTC frames" in skipped
    assert not (out / "metrics.csv").exists()
