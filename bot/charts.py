"""The ``/credits usage`` chart: a guild's credits per day and its top members, as a PNG.

Matplotlib (imported by the first chart, not at start-up) through its object API on the Agg
canvas, so charts can be drawn at once on worker threads; a light card reads on any theme.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from babel.dates import format_skeleton

from bot.i18n import LocaleLike, format_number, resolve_locale, t, tn
from bot.storage.records import UsageSummary

__all__ = ["CHART_SIZE", "render_usage_chart", "usage_summary_line"]

#: Width and height of the PNG in pixels.
CHART_SIZE: Final = (1000, 500)
_DPI: Final = 100

_CARD: Final = "#F4F5F7"
_BORDER: Final = "#C4C9D0"
_TEXT: Final = "#1E1F22"
_MUTED: Final = "#4E5058"
_GRID: Final = "#D5D8DD"
_SPENT: Final = "#4752C4"
_REFUNDED: Final = "#E0A100"


def usage_summary_line(summary: UsageSummary, locale: LocaleLike = None) -> str:
    """One line in ``locale``: what was spent, by how many members, over which period."""
    days = (summary.last_day - summary.first_day).days + 1
    if not summary.jobs:
        if days == 1:
            return t(locale, "No credits spent today.")
        return t(locale, "No credits spent in the last {days} days.", days=days)
    credits = tn(locale, "{count} credit", "{count} credits", summary.credits)
    members = tn(locale, "{count} member", "{count} members", summary.members)
    jobs = tn(locale, "{count} job", "{count} jobs", summary.jobs)
    if summary.refunded:
        refunded = tn(
            locale, "{count} credit refunded", "{count} credits refunded", summary.refunded
        )
        jobs = t(locale, "{jobs}, {refunded}", jobs=jobs, refunded=refunded)
    if days == 1:
        return t(
            locale,
            "{credits} spent today by {members} ({jobs}).",
            credits=credits,
            members=members,
            jobs=jobs,
        )
    return t(
        locale,
        "{credits} spent in the last {days} days by {members} ({jobs}).",
        credits=credits,
        days=days,
        members=members,
        jobs=jobs,
    )


@functools.cache
def _use_fonts() -> None:
    """Latin text in DejaVu Sans, Japanese (labels, member names) in matplotlib-fontja's
    IPAexGothic by glyph fallback; the package is found, not imported (importing it
    would switch every font to IPAexGothic)."""
    import matplotlib as mpl  # noqa: PLC0415
    from matplotlib import font_manager  # noqa: PLC0415

    spec = importlib.util.find_spec("matplotlib_fontja")
    if spec is None or not spec.submodule_search_locations:
        return
    font = Path(next(iter(spec.submodule_search_locations))) / "fonts" / "ipaexg.ttf"
    font_manager.fontManager.addfont(str(font))
    mpl.rcParams["font.family"] = ["DejaVu Sans", "IPAexGothic"]


def render_usage_chart(
    summary: UsageSummary, names: Mapping[int, str | None], locale: LocaleLike = None
) -> bytes:
    """The PNG of ``summary``; ``names`` gives the top members' display names by user id.

    CPU-bound: call it through ``asyncio.to_thread``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    _use_fonts()

    width, height = CHART_SIZE
    figure = Figure(
        figsize=(width / _DPI, height / _DPI),
        dpi=_DPI,
        facecolor=_CARD,
        edgecolor=_BORDER,
        linewidth=3,
    )
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(1, 2, width_ratios=(3, 2), left=0.07, right=0.97, wspace=0.45)
    figure.suptitle(
        usage_summary_line(summary, locale), color=_TEXT, fontsize=14, y=0.95, parse_math=False
    )
    figure.subplots_adjust(top=0.8, bottom=0.16)

    days = summary.every_day()
    daily = figure.add_subplot(grid[0, 0])
    positions = list(range(len(days)))
    spent = [day.credits for day in days]
    daily.bar(positions, spent, color=_SPENT, label=t(locale, "spent"), width=0.8)
    daily.bar(
        positions,
        [day.refunded for day in days],
        bottom=spent,
        color=_REFUNDED,
        label=t(locale, "refunded"),
        width=0.8,
    )
    step = max(len(days) // 6, 1)
    ticks = positions[::step]
    code = resolve_locale(locale)
    daily.set_xticks(ticks, [format_skeleton("MMMd", days[i].day, locale=code) for i in ticks])
    daily.set_xlim(-0.6, len(days) - 0.4)
    daily.yaxis.set_major_locator(MaxNLocator(integer=True))
    daily.set_title(t(locale, "Credits per day (UTC)"), color=_TEXT, fontsize=12, loc="left")
    # Above the plot, right of its title, so it never covers a bar.
    daily.legend(
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncols=2,
        frameon=False,
        labelcolor=_TEXT,
        fontsize=9,
    )
    daily.grid(axis="y", color=_GRID)

    top = figure.add_subplot(grid[0, 1])
    members = list(reversed(summary.top_members))  # biggest at the top
    labels = [_label(names.get(m.user_id), m.user_id) for m in members]
    bars = top.barh(range(len(members)), [m.credits for m in members], color=_SPENT)
    top.set_yticks(range(len(members)), labels)
    top.bar_label(bars, [format_number(m.credits, locale) for m in members], padding=3, color=_TEXT)
    top.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    top.set_title(t(locale, "Top members (credits)"), color=_TEXT, fontsize=12, loc="left")
    top.grid(axis="x", color=_GRID)
    if not members:
        top.text(0.5, 0.5, t(locale, "nobody yet"), ha="center", va="center", color=_MUTED)
        top.set_yticks([])
    top.margins(x=0.2)

    for axes in (daily, top):
        axes.set_facecolor(_CARD)
        axes.set_axisbelow(True)
        axes.tick_params(colors=_MUTED, labelcolor=_TEXT)
        for side, spine in axes.spines.items():
            spine.set_visible(side in {"left", "bottom"})
            spine.set_color(_MUTED)

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor=_CARD, edgecolor=_BORDER)
    return buffer.getvalue()


def _label(name: str | None, user_id: int) -> str:
    # Emoji and other pictographs are not in the chart's font: leave them out.
    kept = "".join(c for c in name or "" if unicodedata.category(c) not in {"So", "Cs", "Co"})
    text = " ".join(kept.split()) or f"user …{str(user_id)[-4:]}"
    text = text if len(text) <= 18 else text[:17] + "…"
    return text.replace("$", r"\$")  # a name is text, never mathtext
