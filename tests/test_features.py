"""Front ends on the embedded clips: shapes, CMVN, its stored file, Griffin-Lim resynthesis, WAV writing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch

from recon_core.data import SAMPLE_RATE, Utterance, scan
from recon_core.errors import InputError
from recon_core.features import (
    CMVN_PATH,
    HOP,
    N_FFT,
    FrontEnd,
    front_end_for,
    n_frames,
    raw_features,
    write_cmvn,
    write_wav,
)

NAMES = {"mfcc": 26, "spectrogram": 257}


@pytest.fixture(scope="module")
def utts() -> list[Utterance]:
    return scan(Path(__file__).resolve().parents[1] / "recon_core" / "assets" / "demo")


@pytest.fixture(scope="module")
def waves(utts: list[Utterance]) -> dict[str, torch.Tensor]:
    return {u.utt_id: u.load() for u in utts}


@pytest.mark.parametrize("n_samples", [257, 400, 512, 16000, 16159, 16160, 24611])
@pytest.mark.parametrize("name", NAMES)
def test_frame_count_formula(name: str, n_samples: int) -> None:
    torch.manual_seed(0)
    feats = raw_features(torch.randn(n_samples) * 0.1, name)
    assert feats.shape == (1 + n_samples // 160, NAMES[name]) == (n_frames(n_samples, name), NAMES[name])


@pytest.mark.parametrize(("model", "name"), [("ds1", "mfcc"), ("ds2", "spectrogram")])
def test_shapes_on_real_clips(model: str, name: str, waves: dict[str, torch.Tensor]) -> None:
    fe = front_end_for(model)
    assert fe is front_end_for(model)
    assert (fe.name, fe.n_features) == (name, NAMES[name])
    for wave in waves.values():
        raw = fe.raw(wave)
        assert raw.dtype == torch.float32
        assert raw.shape == (n_frames(wave.numel(), name), NAMES[name])
        assert torch.isfinite(raw).all()


@pytest.mark.parametrize("model", ["ds1", "ds2"])
def test_standardised_corpus_is_zero_mean_unit_std(model: str, waves: dict[str, torch.Tensor]) -> None:
    fe = front_end_for(model)
    frames = torch.cat([fe.standardise(fe.raw(w)) for w in waves.values()])
    assert frames.mean(dim=0).abs().max() < 1e-3
    assert (frames.std(dim=0, correction=0) - 1).abs().max() < 1e-3
    assert frames.abs().mean() > 0.3  # not collapsed


@pytest.mark.parametrize("model", ["ds1", "ds2"])
def test_destandardise_inverts_with_leading_dims(model: str) -> None:
    fe = front_end_for(model)
    x = torch.randn(3, 50, fe.n_features) * 4 + 2
    assert torch.allclose(fe.destandardise(fe.standardise(x)), x, atol=1e-4)
    assert torch.allclose(fe.destandardise(fe.standardise(x.double())), x.double(), atol=1e-9)


def test_stored_cmvn_is_reproducible(tmp_path: Path) -> None:
    stored = json.loads(CMVN_PATH.read_text())
    regenerated = write_cmvn(tmp_path / "sub" / "cmvn.json")
    assert json.loads((tmp_path / "sub" / "cmvn.json").read_text()) == regenerated
    assert list(tmp_path.rglob(".*")) == []
    for name, n in NAMES.items():
        assert len(stored[name]["mean"]) == len(stored[name]["std"]) == n
        assert stored[name]["frames"] == regenerated[name]["frames"] > 1000
        assert stored[name]["corpus"] == regenerated[name]["corpus"]
        for key in ("mean", "std"):
            assert stored[name][key] == pytest.approx(regenerated[name][key], rel=1e-5, abs=1e-6)
        assert min(stored[name]["std"]) > 0


def test_front_end_load_rejects_bad_stats(tmp_path: Path) -> None:
    bad = tmp_path / "cmvn.json"
    bad.write_text('{"mfcc": {"mean": [0], "std": [1]}}')
    with pytest.raises(InputError, match="26 values"):
        FrontEnd.load("mfcc", bad)
    with pytest.raises(InputError, match="spectrogram"):
        FrontEnd.load("spectrogram", bad)
    with pytest.raises(InputError, match="ds3"):
        front_end_for("ds3")


def _log_spec(wave: torch.Tensor) -> torch.Tensor:
    return raw_features(wave, "spectrogram")


@pytest.mark.parametrize("model", ["ds1", "ds2"])
def test_griffin_lim_round_trip(model: str, waves: dict[str, torch.Tensor], tmp_path: Path) -> None:
    fe = front_end_for(model)
    wave = waves["cards-0-0003"]
    audio = fe.to_audio(fe.raw(wave))
    assert torch.equal(audio, fe.to_audio(fe.raw(wave)))  # deterministic
    out = tmp_path / "nested" / f"{model}.wav"
    write_wav(out, audio)
    back, rate = sf.read(out, dtype="float32")
    assert rate == SAMPLE_RATE and back.ndim == 1
    assert abs(len(back) - wave.numel()) < HOP
    n = min(len(back), wave.numel())
    original, resynth = _log_spec(wave[:n]), _log_spec(torch.from_numpy(back[:n]))
    corr = torch.corrcoef(torch.stack([original.flatten(), resynth.flatten()]))[0, 1]
    assert corr > (0.95 if model == "ds2" else 0.8), corr


def test_resynthesis_of_noise_does_not_correlate(waves: dict[str, torch.Tensor]) -> None:
    """The correlation check above is a real test: unrelated audio scores far lower."""
    wave = waves["cards-0-0003"]
    torch.manual_seed(0)
    noise = torch.randn_like(wave) * wave.std()
    corr = torch.corrcoef(torch.stack([_log_spec(wave).flatten(), _log_spec(noise).flatten()]))[0, 1]
    assert corr < 0.5


def test_write_wav_atomic_normalises_peak(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "loud.wav"
    write_wav(out, torch.tensor([0.0, 3.0, -1.5, 0.75]))
    data, rate = sf.read(out, dtype="float32")
    assert rate == SAMPLE_RATE and sf.info(out).subtype == "PCM_16"
    assert data.tolist() == pytest.approx([0.0, 1.0, -0.5, 0.25], abs=1e-4)
    write_wav(out, torch.tensor([0.5, -0.25]), sample_rate=8000)  # replaces, no normalisation below 1
    data, rate = sf.read(out, dtype="float32")
    assert rate == 8000 and data.tolist() == pytest.approx([0.5, -0.25], abs=1e-4)
    assert sorted(p.name for p in out.parent.iterdir()) == ["loud.wav"]


def test_write_wav_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    with pytest.raises(Exception):  # noqa: B017 - whatever soundfile raises for a bad rate
        write_wav(tmp_path / "bad.wav", torch.zeros(10), sample_rate=0)
    assert list(tmp_path.iterdir()) == []


def test_too_short_wave_is_input_error() -> None:
    with pytest.raises(InputError, match="more than 256 samples"):
        raw_features(torch.zeros(N_FFT // 2), "mfcc")
