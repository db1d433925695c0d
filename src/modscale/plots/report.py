"""One self-contained HTML page of results: figures embedded as base64 PNG, our numbers beside the paper's.

The page has no external references (no scripts, style sheets, fonts or images from elsewhere), so it can be
mailed or archived as one file. Sections: what the numbers are and where they come from; the verdict (each of
the paper's claims, what the runs show, and whether they agree: :mod:`modscale.plots.verdicts`); one row per
experiment (configs, seeds, runs, compute time, devices, versions, when); then each figure with its caption
and its table of comparisons (ours: mean +- 1 SD over seeds, the seed count, the paper's value and the ratio).
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from modscale import __version__, paper
from modscale.errors import InvalidValue
from modscale.plots.figure import FigureOutput, render
from modscale.plots.verdicts import verdicts
from modscale.results import Record

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.55em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; } .caption { font-size: 0.9em; color: #444; }
.note { background: #fff8e0; padding: 0.5em 0.8em; border-left: 3px solid #e0b000; font-size: 0.9em; }
td.yes { background: #e3f4e3; } td.partly { background: #fff4d6; } td.no { background: #fbe3e3; }
td.notrun { color: #888; }
"""


def fmt(value: float | None) -> str:
    """A number for a table: 3 significant digits, scientific when large or small; dashes for none."""
    if value is None:
        return "&mdash;"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "&infin;" if value > 0 else "-&infin;"
    a = abs(value)
    if a != 0 and (a >= 1e5 or a < 1e-3):
        return f"{value:.2e}"
    return f"{value:.3g}"


def figure_png(output: FigureOutput, dpi: int = 110) -> str:
    """``output``'s figure as the report embeds it: a PNG, base64-encoded."""
    buf = io.BytesIO()
    output.figure.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _experiment_rows(records: Sequence[Record], descriptions: Mapping[str, str]) -> str:
    by: dict[str, list[Record]] = {}
    for r in records:
        by.setdefault(r.experiment, []).append(r)
    head = (
        "<tr><th>experiment</th><th>what</th><th>tiers</th><th>configs</th><th>seeds per config</th>"
        "<th>runs</th><th>compute time</th><th>device</th><th>version</th><th>last run</th></tr>"
    )
    rows = [head]
    for name in sorted(by):
        rs = by[name]
        per_config: dict[str, set[int]] = {}
        for r in rs:
            per_config.setdefault(r.config_hash, set()).add(r.seed)
        counts = sorted({len(s) for s in per_config.values()})
        seeds = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        cells = [
            html.escape(name),
            html.escape(descriptions.get(name, "")),
            html.escape(", ".join(sorted({r.tier for r in rs if r.tier}))),
            str(len(per_config)),
            seeds,
            str(len(rs)),
            _duration(sum(r.wall_s for r in rs)),
            html.escape(", ".join(sorted({r.device for r in rs}))),
            html.escape(", ".join(sorted({r.version for r in rs}))),
            html.escape(max((r.finished for r in rs), default="")),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "<table>" + "\n".join(rows) + "</table>"


def _verdict_table(records: Sequence[Record]) -> str:
    """The paper's claims, what the runs show and whether they agree (:mod:`modscale.plots.verdicts`)."""
    head = "<tr><th>the paper's claim</th><th>what our runs show</th><th>agrees?</th></tr>"
    rows = [head]
    for v in verdicts(records):
        css = v.agrees.replace(" ", "")
        rows.append(
            f"<tr><td>{html.escape(v.claim)}</td><td>{html.escape(v.ours)} "
            f"<small>(<code>{html.escape(v.experiment)}</code>)</small></td>"
            f'<td class="{css}">{html.escape(v.agrees)}</td></tr>'
        )
    return "<table>" + "\n".join(rows) + "</table>"


def _comparison_table(output: FigureOutput) -> str:
    if not output.comparisons:
        return "<p>No published numbers to compare with for this figure.</p>"
    head = (
        "<tr><th>quantity</th><th>at</th><th>ours (mean &plusmn; SD)</th><th>seeds</th><th>paper</th>"
        "<th>ours / paper</th><th>note</th></tr>"
    )
    rows = [head]
    for c in output.comparisons:
        ours = fmt(c.ours) + (f" &plusmn; {fmt(c.spread)}" if c.spread is not None and c.n_seeds > 1 else "")
        ratio = None
        if c.ours is not None and c.paper not in (None, 0) and math.isfinite(c.ours):
            ratio = c.ours / c.paper
        rows.append(
            f"<tr><td>{html.escape(c.quantity)}</td><td>{html.escape(c.at)}</td><td class=num>{ours}</td>"
            f"<td class=num>{c.n_seeds}</td><td class=num>{fmt(c.paper)}</td><td class=num>{fmt(ratio)}</td>"
            f"<td>{html.escape(c.note)}</td></tr>"
        )
    return "<table>" + "\n".join(rows) + "</table>"


def report_html(
    records: Sequence[Record],
    *,
    notes: Sequence[str] = (),
    descriptions: Mapping[str, str] | None = None,
    source: str = "",
    title: str = "modscale: results beside the paper",
    outputs: Sequence[FigureOutput] | None = None,
    images: Mapping[str, str] | None = None,
) -> str:
    """The report page for ``records`` as a string (see :func:`write_report`)."""
    descriptions = descriptions or {}
    images = images or {}
    outputs = render(records) if outputs is None else outputs
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Generated {when} by modscale {html.escape(__version__)}"
        + (f" from <code>{html.escape(source)}</code>" if source else "")
        + f": {len(records)} runs of {len({r.experiment for r in records})} experiment(s).</p>",
        f"<p>Paper: {html.escape(paper.CITATION)}. Its numbers are read off its figures and are approximate; "
        "its sine-task losses are on its own loss scale, so for them compare shapes, not levels. Ours: mean "
        "&plusmn; 1 SD over seeds (the seed count is in every table and caption).</p>",
    ]
    parts.append("<h2>Verdict</h2>")
    parts.append(
        "<p>Each row is computed from the stored runs by fixed rules (<code>modscale.plots.verdicts</code>): "
        "<i>yes</i> where the claim holds at every point the runs cover, <i>partly</i> at some, <i>no</i> at "
        "none, <i>not run</i> without runs. Means &plusmn; 1 SD over seeds; the paper's values in brackets."
        "</p>"
    )
    parts.append(_verdict_table(records))
    if notes:
        parts.append(
            '<div class="note"><b>Notes on the stored results</b><ul>'
            + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
            + "</ul></div>"
        )
    parts.append("<h2>Experiments</h2>")
    parts.append(_experiment_rows(records, descriptions))
    if outputs:
        links = [f'<a href="#fig-{html.escape(o.name)}">{html.escape(o.title)}</a>' for o in outputs]
        parts.append("<p>Figures: " + ", ".join(links) + "</p>")
    for o in outputs:
        parts.append(f'<h2 id="fig-{html.escape(o.name)}">{html.escape(o.title or o.name)}</h2>')
        parts.append(f"<p>Experiments: {html.escape(', '.join(o.experiments))}</p>")
        png = images.get(o.name) or figure_png(o)
        parts.append(f'<img alt="{html.escape(o.name)}" src="data:image/png;base64,{png}">')
        parts.append(f'<p class="caption">{html.escape(o.caption)}</p>')
        parts.append(_comparison_table(o))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    records: Sequence[Record],
    path: str | os.PathLike,
    *,
    notes: Sequence[str] = (),
    descriptions: Mapping[str, str] | None = None,
    source: str = "",
    outputs: Sequence[FigureOutput] | None = None,
    images: Mapping[str, str] | None = None,
) -> Path:
    """Write the self-contained HTML report of ``records`` to ``path`` (atomically: a temp file, then rename).

    ``notes``: sentences on what was skipped when reading the results; ``descriptions``: one line per
    experiment name; ``source``: where the records came from (shown on the page); ``outputs``: figures
    already drawn from these records (drawn here when not given); ``images``: their PNGs as
    :func:`figure_png` makes them, by figure name (made here when missing).
    """
    path = Path(path)
    text = report_html(
        records, notes=notes, descriptions=descriptions, source=source, outputs=outputs, images=images
    )
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:  # a parent that is a file, no permission, a full disk...
        raise InvalidValue(f"cannot write the report {path}: {err.strerror}") from None
    finally:
        with contextlib.suppress(OSError):  # after a failure; a renamed file is gone from there already
            tmp.unlink(missing_ok=True)
    return path


def _plain(value: float | None) -> str:
    return html.unescape(fmt(value)).replace("\u2014", "-")


def summary_text(
    records: Sequence[Record], outputs: Sequence[FigureOutput], *, notes: Sequence[str] = ()
) -> str:
    """The report's numbers as plain text: per experiment its runs and time, per figure its comparisons."""
    lines = [
        f"modscale {__version__}: {len(records)} runs",
        "",
        "== Verdict: the paper's claims and our runs",
    ]
    for v in verdicts(records):
        lines.append(f"[{v.agrees}] {v.claim}")
        lines.append(f"    {v.ours} ({v.experiment})")
    lines.append("")
    by: dict[str, list[Record]] = {}
    for r in records:
        by.setdefault(r.experiment, []).append(r)
    for name in sorted(by):
        rs = by[name]
        configs = len({r.config_hash for r in rs})
        devices = ", ".join(sorted({r.device for r in rs}))
        compute = _duration(sum(r.wall_s for r in rs))
        lines.append(f"{name}: {len(rs)} runs ({configs} configs), {compute} of compute on {devices}")
    for note in notes:
        lines.append(f"note: {note}")
    for o in outputs:
        lines += ["", f"== {o.title or o.name} ({', '.join(o.experiments)})", o.caption]
        for c in o.comparisons:
            ours = _plain(c.ours) + (
                f" +- {_plain(c.spread)}" if c.spread is not None and c.n_seeds > 1 else ""
            )
            paper_value = f"   paper {_plain(c.paper)}" if c.paper is not None else ""
            lines.append(f"  {c.quantity} @ {c.at}: ours {ours} ({c.n_seeds} seeds){paper_value}")
    return "\n".join(lines) + "\n"


__all__ = ["write_report", "report_html", "summary_text", "fmt", "figure_png"]
