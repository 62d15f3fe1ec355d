"""The report as one self-contained HTML file: pictures inlined as data URIs, no scripts."""

from __future__ import annotations

import base64
from datetime import datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from deepnet.errors import RunExistsError
from deepnet.report import REPORT_FILE

if TYPE_CHECKING:
    from deepnet.report.build import Report, Section

# Nothing may widen the page past the window: long words (paths, parameter lists) wrap
# anywhere, pictures shrink to fit, and the results table scrolls inside its own box.
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1em; max-width: 1100px;
  color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
p, li, figcaption, table.headline td { overflow-wrap: anywhere; }
table { border-collapse: collapse; font-size: .85em; }
td, th { border: 1px solid #ddd; padding: .25em .5em; text-align: right; }
th { background: #f4f4f4; } table.headline td { text-align: left; }
table.headline td:first-child { font-weight: 600; white-space: nowrap; }
table.results td { white-space: nowrap; }
.scroll { overflow-x: auto; max-width: 100%; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; max-width: 100%; }
figcaption { font-size: .85em; color: #555; contain: inline-size; }  /* as wide as its image */
img { max-width: 100%; height: auto; }
.missing { background: #fff6e0; border: 1px solid #e8c66b; padding: .5em 1em; }
"""


def render(report: Report) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(report.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(report.title)}</h1>",
        f"<p>{escape(str(report.run_dir))} · report written "
        f"{datetime.now().strftime('%Y-%m-%d %H:%M')}</p>",
        '<table class="headline" id="headline">',
        *(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in report.headline),
        "</table>",
    ]
    if report.missing:
        items = "".join(f"<li>{escape(m)}</li>" for m in report.missing)
        parts.append(f'<div class="missing" id="missing"><b>Not shown</b><ul>{items}</ul></div>')
    parts += [_section(s) for s in report.sections]
    parts.append("</body></html>")
    return "\n".join(parts)


def _section(section: Section) -> str:
    out = [f"<section><h2>{escape(section.title)}</h2>"]
    if section.text:
        out.append(f"<p>{escape(section.text)}</p>")
    for caption, png in section.pictures:
        data = base64.b64encode(png).decode("ascii")
        out.append(
            f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>"
        )
    if section.table:
        header, rows = section.table
        out.append('<div class="scroll"><table class="results"><tr>')
        out += [f"<th>{escape(h)}</th>" for h in header]
        out.append("</tr>")
        for row in rows:
            out.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>")
        out.append("</table></div>")
    out.append("</section>")
    return "\n".join(out)


def write_report(report: Report, path: Path | None = None) -> Path:
    """Write the page (atomically) to ``path``, default RUN/report.html; return its path."""
    path = path or report.run_dir / REPORT_FILE
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(render(report), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RunExistsError(
            f"cannot write the report to {path}: {exc.strerror or exc}. Give a writable "
            "file with --out (e.g. --out /tmp/report.html)."
        ) from exc
    return path
