"""Scanning the embedded clips, the original duration/index selection, and every bad-input path."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from recon_core.config import DataConfig
from recon_core.data import DEMO_DIR, SAMPLE_RATE, load_selection, scan, select
from recon_core.errors import InputError
from recon_core.text import encode

# Measured from the FLAC headers: total frames / rate * 1000.
DURATIONS_MS = {
    "1272-128104-0001": 4815.0,
    "austen-1-0880": 2990.0,
    "cards-0-0001": 1095.375,
    "cards-0-0003": 1538.1875,
    "cards-0-0005": 3502.5,
    "goforward-0-0001": 2786.25,
    "lj-002-0020": 33949 / 22050 * 1000,
}


def test_scan_demo_ids_sorted_with_header_durations(demo_dir: Path) -> None:
    utts = scan(demo_dir)
    assert [u.utt_id for u in utts] == sorted(DURATIONS_MS)
    for u in utts:
        info = sf.info(u.path)
        assert u.duration_ms == pytest.approx(info.frames / info.samplerate * 1000)
        assert u.duration_ms == pytest.approx(DURATIONS_MS[u.utt_id])
        assert u.sample_rate == info.samplerate
        assert u.labels == encode(u.transcript)
    by_id = {u.utt_id: u for u in utts}
    assert by_id["1272-128104-0001"].transcript == "nor is mister quilter's manner less interesting than his matter"
    assert by_id["lj-002-0020"].sample_rate == 22050


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (DataConfig(min_ms=1000, max_ms=2000), ["cards-0-0001", "cards-0-0003", "lj-002-0020"]),
        (DataConfig(min_ms=2000, max_ms=4000), ["austen-1-0880", "cards-0-0005", "goforward-0-0001"]),
        (DataConfig(min_ms=2000, max_ms=4000, start=1, end=3), ["cards-0-0005", "goforward-0-0001"]),
        (DataConfig(min_ms=1000, max_ms=2000, start=2), ["lj-002-0020"]),
        (DataConfig(start=5), ["goforward-0-0001", "lj-002-0020"]),
        (DataConfig(min_ms=2990, max_ms=3502.5), ["austen-1-0880"]),  # lower bound in, upper bound out
    ],
)
def test_select_bucket_then_index(demo_dir: Path, cfg: DataConfig, expected: list[str]) -> None:
    assert [u.utt_id for u in select(scan(demo_dir), cfg)] == expected


def test_select_ids_in_given_order() -> None:
    cfg = DataConfig(ids=("lj-002-0020", "cards-0-0001"), min_ms=3000)
    assert [u.utt_id for u in load_selection(cfg)] == ["lj-002-0020", "cards-0-0001"]


def test_load_selection_defaults_to_demo_clips(demo_copy: Path) -> None:
    assert len(load_selection(DataConfig())) == len(DURATIONS_MS)
    assert load_selection(DataConfig(data=demo_copy, end=1))[0].path.is_relative_to(demo_copy)
    assert DEMO_DIR.is_dir()


def test_load_mono_float32_at_16k(demo_dir: Path) -> None:
    by_id = {u.utt_id: u for u in scan(demo_dir)}
    native = by_id["cards-0-0001"].load()
    assert native.dtype.is_floating_point and native.ndim == 1 and native.numel() == 17526
    resampled = by_id["lj-002-0020"].load()
    assert resampled.ndim == 1
    assert abs(resampled.numel() - math.ceil(33949 * SAMPLE_RATE / 22050)) <= 1
    assert 0.01 < resampled.abs().max() <= 1.0


def test_load_averages_channels(tmp_path: Path, demo_dir: Path) -> None:
    utt = next(u for u in scan(demo_dir) if u.utt_id == "cards-0-0001")
    mono = utt.load().numpy()
    folder = tmp_path / "stereo"
    folder.mkdir()
    sf.write(folder / "s-0-0001.wav", np.stack([mono, 0 * mono], axis=1), SAMPLE_RATE)
    (folder / "s-0.trans.txt").write_text("s-0-0001 TEN OF CLUBS\n")
    (stereo,) = scan(folder)
    assert stereo.load().numpy() == pytest.approx(mono / 2, abs=1e-4)


def _raises(match: str, folder: Path) -> None:
    with pytest.raises(InputError, match=match) as err:
        scan(folder)
    assert "\n" not in str(err.value)


def test_missing_folder(tmp_path: Path) -> None:
    _raises("nowhere", tmp_path / "nowhere")


def test_folder_without_audio(tmp_path: Path) -> None:
    (tmp_path / "x.trans.txt").write_text("x-0-0001 HELLO\n")
    _raises(r"no \.flac or \.wav files", tmp_path)


def test_audio_without_transcript_line(demo_copy: Path) -> None:
    shutil.copy(next(demo_copy.rglob("cards-0-0001.flac")), demo_copy / "extra-9-0001.flac")
    _raises(r"extra-9-0001\.flac has no transcript line", demo_copy)


def test_unreadable_file(demo_copy: Path) -> None:
    bad = next(demo_copy.rglob("cards-0-0003.flac"))
    bad.write_bytes(b"this is not audio at all" * 10)
    _raises(r"cards-0-0003\.flac cannot be read", demo_copy)


def test_empty_file(demo_copy: Path) -> None:
    folder = next(demo_copy.rglob("cards-0.trans.txt")).parent
    sf.write(folder / "cards-0-0009.wav", np.zeros(0, dtype="float32"), SAMPLE_RATE)
    with (folder / "cards-0.trans.txt").open("a") as f:
        f.write("cards-0-0009 NINE OF CLUBS\n")
    _raises(r"cards-0-0009\.wav is empty", demo_copy)


@pytest.mark.parametrize(("said", "bad"), [("TWO OF CLUBS 2", "2"), ("CAFÉ OF CLUBS", "é")])
def test_symbols_outside_alphabet(demo_copy: Path, said: str, bad: str) -> None:
    trans = next(demo_copy.rglob("cards-0.trans.txt"))
    trans.write_text(trans.read_text().replace("TEN OF CLUBS", said), encoding="utf-8")
    _raises(f"cards-0-0001.*{bad}", demo_copy)


def test_selection_matching_nothing(demo_dir: Path) -> None:
    utts = scan(demo_dir)
    with pytest.raises(InputError, match=r"\[0, 1000\) ms.*0 of the folder's 7 clips"):
        select(utts, DataConfig(max_ms=1000))
    with pytest.raises(InputError, match=r"index \[3:\].*2 of the folder's 7 clips"):
        select(utts, DataConfig(min_ms=3000, start=3))


def test_unknown_id_lists_available(demo_dir: Path) -> None:
    with pytest.raises(InputError, match=r"unknown utterance id nope; available: 1272-128104-0001, austen"):
        select(scan(demo_dir), DataConfig(ids=("cards-0-0001", "nope")))
