"""The soak run (bench/soak.py) at a small size: the real bot process, API faults, a kill -9;
on SQLite one process, on PostgreSQL two (shards 0 and 1 of 2) sharing the database."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import SECTIONS, SoakConfig, render, run_soak, write_readme

pytestmark = pytest.mark.timeout(180)


async def test_a_small_soak_ends_with_a_clean_audit(
    tmp_path: Path, backend: str, database_url: str
) -> None:
    config = SoakConfig(
        jobs=60, kills=1, fault_rate=0.2, guilds=2, members=3, rate=30, database=backend
    )
    report = await run_soak(config, tmp_path, database_url)
    assert report.kills == 1
    assert report.submitted == 60
    assert report.api_calls > 0
    # Every reserved job ended committed or refunded, exactly once, and the money adds up.
    assert report.lost == 0
    assert report.delivered + report.refunded == report.submitted - report.refused
    assert report.delivered_twice == 0
    assert report.delivered_and_refunded == 0
    assert report.images_vs_credits_mismatches == 0
    assert report.ledger_ok
    assert report.clean
    assert "Audit: **clean**" in render(config, report)


def test_the_figures_replace_their_own_section_only(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\n## Results\n\nkept\n")
    section = SECTIONS["sqlite"]
    write_readme(f"{section}\n\nfirst\n", section, readme)
    readme.write_text(readme.read_text() + "\n## Later\n\nalso kept\n")
    write_readme(f"{section}\n\nsecond\n", section, readme)
    text = readme.read_text()
    assert text.count(section) == 1
    assert "second" in text and "first" not in text
    assert "kept" in text and "## Later\n\nalso kept" in text
