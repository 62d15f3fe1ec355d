"""Comparing search results across runs."""

import csv
from pathlib import Path


def results_table(path: Path) -> list[tuple[str, ...]]:
    """results.csv without what may differ between runs of one search (after a resume, on
    other workers): rank, trial number, seconds."""
    rows = list(csv.DictReader(path.open()))
    return sorted(
        tuple(v for k, v in r.items() if k not in ("rank", "trial", "seconds")) for r in rows
    )
