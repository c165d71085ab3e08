"""The /credits usage chart: a PNG of the right size, and its one-line summary."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings
from datetime import date, timedelta
from pathlib import Path

import pytest
from PIL import Image

from bot.charts import CHART_SIZE, render_usage_chart, usage_summary_line
from bot.storage.records import DailySpend, MemberSpend, UsageSummary

LAST = date(2026, 3, 31)


def summary(days: int, spent: list[tuple[int, int, int, int]], members: int = 0) -> UsageSummary:
    first = LAST - timedelta(days=days - 1)
    return UsageSummary(
        guild_id=1,
        first_day=first,
        last_day=LAST,
        days=tuple(DailySpend(first + timedelta(days=n), c, r, j) for n, c, r, j in spent),
        top_members=tuple(MemberSpend(100 + n, 10 - n, 1) for n in range(members)),
        members=members,
    )


@pytest.mark.parametrize(
    ("usage", "line"),
    [
        (summary(30, []), "No credits spent in the last 30 days."),
        (summary(1, []), "No credits spent today."),
        (summary(7, [(0, 1, 0, 1)], 1), "1 credit spent in the last 7 days by 1 member (1 job)."),
        (
            summary(90, [(0, 1200, 3, 400), (89, 34, 0, 17)], 12),
            "1,234 credits spent in the last 90 days by 12 members (417 jobs, 3 credits refunded).",
        ),
    ],
)
def test_summary_line(usage: UsageSummary, line: str) -> None:
    assert usage_summary_line(usage) == line


@pytest.mark.parametrize("days", [1, 30, 90])
def test_the_chart_is_a_png_of_at_least_800_by_400(days: int) -> None:
    usage = summary(days, [(n, n % 7, n % 2, 1) for n in range(0, days, 3)], members=5)
    names = {100: "Ada $x$ Lovelace 🎨", 101: "  ", 102: "a" * 40}  # 103, 104: unknown
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no missing glyph, no mathtext surprise
        png = render_usage_chart(usage, names)
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        assert image.size == CHART_SIZE
        assert image.width >= 800 and image.height >= 400
        # A solid card: the corners are opaque, so it reads the same on dark and light themes.
        assert image.convert("RGBA").getpixel((5, 5))[3] == 255


def test_an_empty_period_still_draws() -> None:
    png = render_usage_chart(summary(30, []), {})
    assert png.startswith(b"\x89PNG")


def test_matplotlib_is_imported_only_to_draw() -> None:
    # The credits cog imports bot.charts at start-up; matplotlib must wait for a chart.
    probe = "import sys, bot.app, cogs.credits, cogs.gallery; sys.exit('matplotlib' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", probe], check=False, timeout=60, cwd=root)
    assert done.returncode == 0


def test_the_summary_line_is_in_the_readers_language() -> None:
    usage = summary(90, [(0, 1200, 3, 400), (89, 34, 0, 17)], 12)
    assert usage_summary_line(usage, "de") == (
        "In den letzten 90 Tagen ausgegeben: 1.234 Credits, von 12 Mitgliedern "
        "(417 Aufträge, 3 Credits erstattet)."
    )
    assert usage_summary_line(summary(1, []), "ja") == "今日はクレジットが使われていません。"


def test_a_japanese_chart_has_every_glyph() -> None:
    # Japanese labels and member names are drawn with the IPAexGothic that
    # matplotlib-fontja ships; a missing glyph would warn.
    usage = summary(30, [(n, 2, 1, 1) for n in range(30)], members=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png = render_usage_chart(usage, {100: "山田 太郎", 101: "Ada"}, "ja")
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == CHART_SIZE
