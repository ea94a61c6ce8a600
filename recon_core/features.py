"""The models' front ends: waveform -> frames-major features, their CMVN, and a way back to audio.

Both front ends share one STFT grid (n_fft 512, hop 160 = 10 ms, Hann window, centred frames) so
that Griffin-Lim can resynthesise either of them with the same analysis it inverts:

- "mfcc" (DS1): 26 MFCC per frame from a 40-band HTK mel power spectrum, 25 ms window (400 samples),
  natural log with offset 1e-6, orthonormal DCT-II. The model adds the +-9-frame context itself.
- "spectrogram" (DS2): 257 bins of log1p(|STFT|), 20 ms window (320 samples) as in deepspeech.pytorch.

Frame count for n samples: T = 1 + n // 160 (centred frames: n_fft // 2 samples of reflect padding on
each side). The CMVN statistics are a property of the front end (computed once over a corpus and kept
in assets/cmvn.json), never of the clip under attack.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
import torchaudio.transforms as T

from recon_core.atomic import atomic_write
from recon_core.data import DEMO_DIR, SAMPLE_RATE, Utterance, scan
from recon_core.errors import InputError

CMVN_PATH = Path(__file__).resolve().parent / "assets" / "cmvn.json"
N_FFT = 512
HOP = 160
N_MELS = 40
LOG_OFFSET = 1e-6  # torchaudio MFCC's offset inside log(mel + offset) when log_mels=True
STD_FLOOR = 1e-5
GRIFFIN_LIM_ITERS = 32
_WINDOW = {"mfcc": 400, "spectrogram": 320}
_N_FEATURES = {"mfcc": 26, "spectrogram": N_FFT // 2 + 1}
_MODEL_FRONT_END = {"ds1": "mfcc", "ds2": "spectrogram"}


def n_frames(n_samples: int, name: str) -> int:
    """Frames the front end `name` gives for n_samples: 1 + n_samples // HOP (the same for both)."""
    _check_name(name)
    return 1 + n_samples // HOP


class FrontEnd:
    """Feature extraction, per-coefficient standardisation and resynthesis for one model family."""

    def __init__(self, name: str, mean: torch.Tensor, std: torch.Tensor) -> None:
        _check_name(name)
        self.name = name
        self.n_features = _N_FEATURES[name]
        if mean.shape != (self.n_features,) or std.shape != (self.n_features,):
            raise InputError(f"CMVN statistics for {name} must have {self.n_features} values each")
        self.mean = mean.to(torch.float32)
        self.std = std.to(torch.float32).clamp_min(STD_FLOOR)

    @classmethod
    def load(cls, name: str, path: Path = CMVN_PATH) -> FrontEnd:
        """The front end with the CMVN statistics stored in `path` (assets/cmvn.json by default)."""
        try:
            stats = json.loads(Path(path).read_text())[name]
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"CMVN file {path} has no readable statistics for {name!r}: {exc}") from exc
        return cls(name, torch.tensor(stats["mean"]), torch.tensor(stats["std"]))

    def raw(self, wave: torch.Tensor) -> torch.Tensor:
        """(T, F) float32 features of a 1-D 16 kHz waveform, before standardisation."""
        return raw_features(wave, self.name)

    def standardise(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.mean.to(raw)) / self.std.to(raw)

    def destandardise(self, std: torch.Tensor) -> torch.Tensor:
        """Inverse of standardise; broadcasts over any leading dims, e.g. (restarts, T, F)."""
        return std * self.std.to(std) + self.mean.to(std)

    def to_audio(self, raw: torch.Tensor) -> torch.Tensor:
        """1-D 16 kHz waveform from raw (T, F) features by Griffin-Lim (deterministic start)."""
        raw = raw.detach().to("cpu", torch.float32)
        if raw.ndim != 2 or raw.shape[1] != self.n_features:
            raise ValueError(f"expected (T, {self.n_features}) features, got {tuple(raw.shape)}")
        magnitude = _mfcc_magnitude(raw) if self.name == "mfcc" else torch.expm1(raw).clamp_min(0)
        return _griffin_lim(self.name)(magnitude.T.contiguous())


@cache
def front_end_for(model: str) -> FrontEnd:
    """The front end a model family reads: ds1 -> mfcc, ds2 -> spectrogram."""
    if model not in _MODEL_FRONT_END:
        raise InputError(f"unknown model {model!r}; allowed: {', '.join(_MODEL_FRONT_END)}")
    return FrontEnd.load(_MODEL_FRONT_END[model])


def raw_features(wave: torch.Tensor, name: str) -> torch.Tensor:
    """(T, F) features of a 1-D waveform; needs no CMVN, so the statistics can be computed from it."""
    _check_name(name)
    if wave.ndim != 1 or wave.numel() <= N_FFT // 2:
        raise InputError(f"waveform must be 1-D with more than {N_FFT // 2} samples, got {tuple(wave.shape)}")
    with torch.no_grad():
        feats = _analysis(name)(wave.to("cpu", torch.float32))
    if name == "spectrogram":
        feats = torch.log1p(feats)
    return feats.T.contiguous()


def compute_cmvn(utts: Iterable[Utterance]) -> dict:
    """Per-coefficient mean/std of both front ends over all frames of `utts` (float64 accumulation)."""
    utts = list(utts)
    waves = [u.load() for u in utts]
    corpus = f"{len(utts)} clips: {', '.join(u.utt_id for u in utts)}"
    stats = {}
    for name in _N_FEATURES:
        frames = torch.cat([raw_features(w, name) for w in waves]).to(torch.float64)
        stats[name] = {
            "mean": frames.mean(dim=0).tolist(),
            "std": frames.std(dim=0, correction=0).clamp_min(STD_FLOOR).tolist(),
            "corpus": corpus,
            "frames": frames.shape[0],
        }
    return stats


def write_cmvn(path: Path = CMVN_PATH, folder: Path = DEMO_DIR) -> dict:
    """Recompute the statistics over every clip in `folder` and write them to `path` atomically."""
    stats = compute_cmvn(scan(folder))
    atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(stats, indent=1) + "\n"))
    return stats


def write_wav(path: Path, wave: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit PCM WAV, written atomically; peak-normalised only when it would clip."""
    data = wave.detach().to("cpu", torch.float32).reshape(-1).numpy()
    peak = float(np.abs(data).max()) if data.size else 0.0
    if peak > 1.0:
        data = data / peak
    atomic_write(Path(path), lambda tmp: sf.write(tmp, data, sample_rate, subtype="PCM_16", format="WAV"))


def _check_name(name: str) -> None:
    if name not in _N_FEATURES:
        raise InputError(f"unknown front end {name!r}; allowed: {', '.join(_N_FEATURES)}")


@cache
def _analysis(name: str) -> torch.nn.Module:
    win = _WINDOW[name]
    if name == "spectrogram":
        return T.Spectrogram(n_fft=N_FFT, win_length=win, hop_length=HOP, power=1.0)
    melkwargs = {"n_fft": N_FFT, "win_length": win, "hop_length": HOP, "n_mels": N_MELS}
    return T.MFCC(SAMPLE_RATE, n_mfcc=_N_FEATURES[name], norm="ortho", log_mels=True, melkwargs=melkwargs)


@cache
def _mfcc_inverse() -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-inverses of the DCT (26 <- 40) and of the mel filterbank (40 <- 257).

    A clamped pseudo-inverse of the filterbank replaces torchaudio's InverseMelScale, which solves
    the same least-squares problem by gradient descent and takes seconds per clip.
    """
    dct = AF.create_dct(_N_FEATURES["mfcc"], N_MELS, "ortho")  # (n_mels, n_mfcc)
    fbank = _analysis("mfcc").MelSpectrogram.mel_scale.fb  # (n_freqs, n_mels)
    return torch.linalg.pinv(dct), torch.linalg.pinv(fbank)


def _mfcc_magnitude(raw: torch.Tensor) -> torch.Tensor:
    """(T, 257) STFT magnitude estimated from (T, 26) MFCC: inverse DCT, exp, inverse mel, sqrt."""
    dct_inv, fbank_inv = _mfcc_inverse()
    mel_power = (torch.exp(raw @ dct_inv) - LOG_OFFSET).clamp_min(0)
    return (mel_power @ fbank_inv).clamp_min(0).sqrt()


@cache
def _griffin_lim(name: str) -> torch.nn.Module:
    return T.GriffinLim(
        n_fft=N_FFT, n_iter=GRIFFIN_LIM_ITERS, win_length=_WINDOW[name], hop_length=HOP, power=1.0, rand_init=False
    )


if __name__ == "__main__":
    written = write_cmvn()
    print(f"wrote {CMVN_PATH}: " + ", ".join(f"{k} {v['frames']} frames" for k, v in written.items()))
