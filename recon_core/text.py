"""The 29-class output alphabet of DS1/DS2: CTC blank, space, a-z, apostrophe."""

from __future__ import annotations

import re

BLANK = 0
SYMBOLS = " abcdefghijklmnopqrstuvwxyz'"
N_CLASSES = len(SYMBOLS) + 1  # + blank = 29
_INDEX = {c: i + 1 for i, c in enumerate(SYMBOLS)}


def normalise(text: str) -> str:
    """Lower-case, fold runs of white space, strip: the form transcripts are compared and encoded in."""
    return re.sub(r"\s+", " ", text.strip().lower())


def encode(text: str) -> list[int]:
    """Class indices of a normalised transcript; a symbol outside the alphabet is a ValueError naming it."""
    bad = sorted({c for c in text if c not in _INDEX})
    if bad:
        raise ValueError(f"symbols {''.join(bad)!r} are outside the alphabet (a-z, space, apostrophe)")
    return [_INDEX[c] for c in text]


def decode(indices: list[int]) -> str:
    return "".join(SYMBOLS[i - 1] for i in indices if i != BLANK)


def min_ctc_frames(labels: list[int]) -> int:
    """Fewest output frames a CTC alignment of `labels` needs: one per label plus a blank between repeats."""
    repeats = sum(1 for a, b in zip(labels, labels[1:], strict=False) if a == b)
    return len(labels) + repeats
