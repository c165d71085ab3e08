"""The private status line's wording: place and estimate while queued, time while generating."""

from __future__ import annotations

from bot.jobs import JobProgress
from cogs.imagine._render import status_text


def test_a_queued_line_shows_place_estimate_and_the_reservation() -> None:
    text = status_text(JobProgress("queued", 37, 0, 1, eta=130.0), cost=1)
    assert text == "⏳ #37 in line · about 2 min · 1 credit reserved"
    soon = status_text(JobProgress("queued", 1, 0, 2, eta=20.0), cost=2)
    assert soon == "⏳ #1 in line · under a minute · 2 credits reserved"


def test_a_generating_line_shows_how_long_it_has_been_running() -> None:
    assert status_text(JobProgress("generating", None, 0, 1, elapsed=3.0), 1) == (
        "🎨 Generating your image…"
    )
    assert status_text(JobProgress("generating", None, 0, 1, elapsed=42.5), 1) == (
        "🎨 Generating your image… · 42 sec so far"
    )
    assert status_text(JobProgress("generating", None, 2, 4, elapsed=130.0), 4) == (
        "🎨 Generating 3/4… · 2 min so far"
    )


def test_place_estimate_and_running_time_are_in_the_members_language() -> None:
    queued = JobProgress("queued", 1234, 0, 2, eta=130.0)
    assert status_text(queued, 2, "de") == (
        "⏳ Platz 1.234 in der Warteschlange · etwa 2 Min. · 2 Credits reserviert"
    )
    assert status_text(queued, 2, "ja") == "⏳ 1,234 番目 · 約2 分 · 2 クレジット確保済み"
    running = JobProgress("generating", None, 2, 4, elapsed=42.5)
    assert status_text(running, 4, "de") == "🎨 Bild 3/4 wird erzeugt… · seit 42 Sek."
    assert status_text(running, 4, "fr") == "🎨 Génération 3/4… · depuis 42\u202fs"
