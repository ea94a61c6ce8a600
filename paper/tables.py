"""Tables as files: CSV (what report.md and the figures read back) and booktabs LaTeX of the same rows."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from recon_core.atomic import atomic_text
from recon_core.outputs import read_metrics

Row = dict[str, object]
_TEX_ESCAPES = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def write_table(rows: list[Row], columns: Sequence[str], stem: Path) -> Path:
    """stem.csv and stem.tex with exactly `columns`, in order; returns the CSV's path."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = stem.with_suffix(".csv")
    atomic_text(csv_path, buf.getvalue())
    atomic_text(stem.with_suffix(".tex"), booktabs(read_table(csv_path), columns))
    return csv_path


def read_table(path: Path) -> list[dict[str, str]]:
    return read_metrics(path)


def number(text: object) -> float:
    """A CSV cell as a float; empty cells (not measured) are nan."""
    return float(text) if text not in ("", None) else math.nan


def fmt(value: object, digits: int = 3) -> str:
    """How every number in report.md and the .tex files is shown: 3 significant digits, '-' for missing."""
    if isinstance(value, str):
        try:
            value = float(value) if value not in ("", "True", "False") else value
        except ValueError:
            return value
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def booktabs(rows: list[dict[str, str]], columns: Sequence[str]) -> str:
    numeric = [all(_is_number(r[c]) for r in rows) and bool(rows) for c in columns]
    spec = "".join("r" if n else "l" for n in numeric)
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(_tex(c) for c in columns) + r" \\",
             r"\midrule"]
    lines += [" & ".join(_tex(fmt(r[c])) for c in columns) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text == ""
    return True


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)
