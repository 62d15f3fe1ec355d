"""Pictures and an HTML report of a run folder, drawn from what the run saved."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

REPORT_FILE = "report.html"


def report(
    run_dir: str | Path, compare: Sequence[str | Path] = (), out: str | Path | None = None
) -> Path:
    """Build the report of a run folder (overlaying ``compare`` searches) into ``out``,
    default RUN/report.html (a read-only run folder needs another ``out``)."""
    # matplotlib is imported only when a report is drawn: the rest of deepnet starts faster
    from deepnet.report.build import build_report
    from deepnet.report.page import write_report

    return write_report(build_report(run_dir, compare), Path(out) if out else None)


__all__ = ["REPORT_FILE", "report"]
