"""What every benchmark's report shares: the results folder, number formatting, JSON output and the plotting backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: '-' for None, floats to `digits` places, ints with thousands separators."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_json(path: Path, data: Any) -> Path:
    """Write `data` as indented JSON to `path`, creating its folder; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (benchmarks run on machines without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
