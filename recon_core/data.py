"""Utterances on disk (LibriSpeech layout) and the original scripts' selection by duration and index.

A folder holds `<id>.flac` / `<id>.wav` clips anywhere below it and `*.trans.txt` files with lines
`UTT_ID TRANSCRIPT`. Scanning reads only headers, so choosing clips from a large corpus stays cheap;
audio is decoded when a selected clip is attacked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
import torch
import torchaudio.functional as AF

from recon_core import text
from recon_core.config import DataConfig
from recon_core.errors import InputError

#: The rate every front end works at; clips recorded at another rate are resampled on load.
SAMPLE_RATE = 16000
DEMO_DIR = Path(__file__).resolve().parent / "assets" / "demo"
AUDIO_SUFFIXES = (".flac", ".wav")
_SHOWN_IDS = 20
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Utterance:
    """One clip: where it is, what is said (normalised), and its length as read from the header."""

    utt_id: str
    path: Path
    transcript: str
    duration_ms: float
    sample_rate: int

    @property
    def labels(self) -> list[int]:
        return text.encode(self.transcript)

    def load(self) -> torch.Tensor:
        """1-D float32 mono waveform at SAMPLE_RATE (channels averaged, resampled if needed)."""
        try:
            data, rate = sf.read(self.path, dtype="float32", always_2d=True)
        except (RuntimeError, OSError) as exc:
            raise InputError(f"audio file {self.path} cannot be read: {_first_line(exc)}") from exc
        if data.shape[0] == 0:
            raise InputError(f"audio file {self.path} is empty (0 frames)")
        if data.shape[1] > 1:
            log.warning("%s has %d channels; averaged to mono", self.path, data.shape[1])
        wave = torch.from_numpy(data).mean(dim=1)
        if rate != SAMPLE_RATE:
            log.warning("%s is at %d Hz; resampled to %d Hz", self.path, rate, SAMPLE_RATE)
            wave = AF.resample(wave, rate, SAMPLE_RATE)
        return wave.contiguous()


def scan(folder: Path) -> list[Utterance]:
    """Every clip under `folder` with its transcript and header duration, sorted by id."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"data folder {folder} does not exist or is not a folder")
    audio = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not audio:
        raise InputError(f"data folder {folder} has no {' or '.join(AUDIO_SUFFIXES)} files")
    transcripts = _read_transcripts(folder)
    utts: dict[str, Utterance] = {}
    for path in audio:
        utt = _utterance(path, transcripts, folder)
        if utt.utt_id in utts:
            raise InputError(f"utterance id {utt.utt_id} appears twice: {utts[utt.utt_id].path} and {path}")
        utts[utt.utt_id] = utt
    return [utts[k] for k in sorted(utts)]


def select(utts: list[Utterance], cfg: DataConfig) -> list[Utterance]:
    """The clips a run attacks: the given ids in order, else duration in [min_ms, max_ms) then [start:end]."""
    if cfg.ids:
        return _by_ids(utts, cfg.ids)
    ordered = sorted(utts, key=lambda u: u.utt_id)
    in_bucket = [u for u in ordered if cfg.min_ms <= u.duration_ms < cfg.max_ms]
    chosen = in_bucket[cfg.start : cfg.end]
    if not chosen:
        end = "" if cfg.end is None else cfg.end
        raise InputError(
            f"no clip in duration [{cfg.min_ms:g}, {cfg.max_ms:g}) ms with index [{cfg.start}:{end}]: "
            f"{len(in_bucket)} of the folder's {len(utts)} clips are in that duration range"
        )
    return chosen


def load_selection(cfg: DataConfig) -> list[Utterance]:
    return select(scan(cfg.data if cfg.data is not None else DEMO_DIR), cfg)


def _by_ids(utts: list[Utterance], ids: tuple[str, ...]) -> list[Utterance]:
    known = {u.utt_id: u for u in utts}
    unknown = [i for i in ids if i not in known]
    if unknown:
        names = sorted(known)
        shown = ", ".join(names[:_SHOWN_IDS]) + (f", ... ({len(names)} in all)" if len(names) > _SHOWN_IDS else "")
        raise InputError(f"unknown utterance id {', '.join(unknown)}; available: {shown}")
    return [known[i] for i in ids]


def _read_transcripts(folder: Path) -> dict[str, tuple[str, Path]]:
    """utt id -> (raw transcript, the file it came from), from every *.trans.txt under `folder`."""
    found: dict[str, tuple[str, Path]] = {}
    for path in sorted(folder.rglob("*.trans.txt")):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            utt_id, _, said = line.strip().partition(" ")
            if not said.strip():
                raise InputError(f"{path}:{lineno}: no transcript after utterance id {utt_id}")
            found[utt_id] = (said, path)
    return found


def _utterance(path: Path, transcripts: dict[str, tuple[str, Path]], folder: Path) -> Utterance:
    utt_id = path.name[: -len(path.suffix)]
    if utt_id not in transcripts:
        raise InputError(f"audio file {path} has no transcript line '{utt_id} ...' in any *.trans.txt under {folder}")
    said, source = transcripts[utt_id]
    transcript = text.normalise(said)
    try:
        text.encode(transcript)
    except ValueError as exc:
        raise InputError(f"transcript of {utt_id} in {source}: {exc}") from exc
    try:
        info = sf.info(path)
    except (RuntimeError, OSError) as exc:
        raise InputError(f"audio file {path} cannot be read: {_first_line(exc)}") from exc
    if info.frames <= 0:
        raise InputError(f"audio file {path} is empty (0 frames)")
    return Utterance(utt_id, path, transcript, info.frames / info.samplerate * 1000.0, info.samplerate)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]
