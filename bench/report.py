"""Turn the figures into the results table (one row per benchmark, with its target and
verdict), print it, and write it into ``bench/README.md`` between two markers so
that the hand-written analysis around it is kept."""

from __future__ import annotations

import datetime
import math
import os
import platform
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from bench.backlog import BacklogRun, PacedRun
from bench.backlog import rows as backlog_rows
from bench.harness import percentile
from bench.scenarios import (
    LEDGER_CONCURRENCY,
    LatencyRun,
    LedgerRun,
    ProcessRun,
    Profile,
    ThroughputRun,
)
from bot.event_loop import describe

__all__ = [
    "README",
    "ROW_KEYS",
    "Report",
    "Results",
    "Row",
    "build_report",
    "write_readme",
]

README = Path(__file__).resolve().parent / "README.md"
START = "<!-- results:start (written by python -m bench; edit outside these markers) -->"
END = "<!-- results:end -->"

#: Every row a report has, in order (the smoke test checks them).
ROW_KEYS: tuple[str, ...] = (
    "overhead_sequential",
    "overhead_burst_mid",
    "overhead_burst_top",
    "overhead_steady_mid",
    "overhead_steady_top",
    "overhead_own_process",
    "throughput_queue",
    "throughput_own_process",
    "throughput_naive",
    "throughput_capacity",
    "loop_lag_steady",
    "loop_lag_burst",
    "loop_lag_own_process",
    "ack_steady",
    "ack_burst",
    "bot_cpu",
    "memory_flat",
    "memory_photo",
    "ledger",
    "ledger_concurrent",
    "backlog_drain",
    "backlog_requests",
    "backlog_ack",
    "backlog_loop_lag",
    "backlog_memory",
    "backlog_paced",
)

# Targets (issue 8).
OVERHEAD_P50 = 0.005
OVERHEAD_P99 = 0.050
THROUGHPUT_RATIO = 0.95
LOOP_LAG_P99 = 0.020
ACK_P99 = 0.5
PEAK_RSS = 150e6
LEDGER_RATE = 300.0


@dataclass
class Results:
    """Everything one run measured."""

    profile: Profile
    sequential: LatencyRun
    bursts: list[LatencyRun]
    steady: list[LatencyRun]
    queue: ThroughputRun
    own_queue: ThroughputRun
    naive: ThroughputRun
    capacity: ThroughputRun
    process_flat: ProcessRun
    process_photo: ProcessRun
    ledger: LedgerRun
    backlog: BacklogRun
    paced: PacedRun
    seconds: float = 0.0
    load: tuple[float, float] = (math.nan, math.nan)  # 1-minute load average, start and end


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    result: str
    target: str = "—"
    met: bool | None = None

    @property
    def verdict(self) -> str:
        return {True: "✅ met", False: "❌ missed", None: "—"}[self.met]


@dataclass
class Report:
    rows: list[Row]
    details: list[LatencyRun]
    environment: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def row(self, key: str) -> Row:
        return next(row for row in self.rows if row.key == key)

    def markdown(self) -> str:
        lines = [f"- **{name}**: {value}" for name, value in self.environment.items()]
        lines += ["", "| benchmark | result | target | verdict |", "|---|---|---|---|"]
        lines += [f"| {r.label} | {r.result} | {r.target} | {r.verdict} |" for r in self.rows]
        lines += [
            "",
            "Per scenario. Overhead = result message reaching the fake Discord − interaction "
            "pushed − the time the fake API held the call. *With the fakes' work* = result "
            "stored by the fake Discord − pushed − the nominal latency (the measure of runs "
            "before 2026-11-25 17:30 UTC).",
            "",
            "| scenario | jobs | overhead p50 | p95 | p99 | max "
            "| with the fakes' work, p50 | p99 | API call beyond latency, p50 "
            "| ack p99 | loop lag p99 | max |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for run in self.details:
            over, acks, lag = run.overheads, run.acks, run.loop_lag
            gross = run.overheads_with_fakes
            lines.append(
                f"| {run.name} | {len(run.jobs)} | {_ms(percentile(over, 0.5))} "
                f"| {_ms(percentile(over, 0.95))} | {_ms(percentile(over, 0.99))} "
                f"| {_ms(max(over, default=math.nan))} "
                f"| {_ms(percentile(gross, 0.5))} | {_ms(percentile(gross, 0.99))} "
                f"| {_ms(percentile(run.api_extra, 0.5))} "
                f"| {_ms(percentile(acks, 0.99))} "
                f"| {_ms(percentile(lag, 0.99))} | {_ms(max(lag, default=math.nan))} |"
            )
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _mb(size: float) -> str:
    return f"{size / 1e6:.0f} MB"


def _spread(values: Sequence[float]) -> str:
    return (
        f"p50 {_ms(percentile(values, 0.5))} · p95 {_ms(percentile(values, 0.95))} "
        f"· p99 {_ms(percentile(values, 0.99))}"
    )


def _overhead_row(key: str, label: str, run: LatencyRun, *, judged: bool) -> Row:
    over = run.overheads
    if not judged:
        return Row(key, label, _spread(over))
    met = percentile(over, 0.5) < OVERHEAD_P50 and percentile(over, 0.99) < OVERHEAD_P99
    return Row(key, label, _spread(over), "p50 < 5 ms, p99 < 50 ms", met)


def _lag_row(key: str, label: str, samples: Sequence[float], *, note: str = "") -> Row:
    lag = percentile(samples, 0.99)
    return Row(key, label, _ms(lag) + note, "< 20 ms", lag < LOOP_LAG_P99)


def _gc_note(run: ProcessRun) -> str:
    full = [pause for generation, pause in run.gc_pauses if generation == 2]
    if not run.gc_pauses:
        return ""
    longest = max(pause for _, pause in run.gc_pauses)
    return (
        f" (meanwhile {len(run.gc_pauses)} GC passes, {len(full)} full; "
        f"longest pause {_ms(longest)})"
    )


def _ack_row(key: str, label: str, run: LatencyRun) -> Row:
    ack = percentile(run.acks, 0.99)
    return Row(key, label, _ms(ack), "< 500 ms", ack < ACK_P99)


def _throughput(run: ThroughputRun) -> str:
    api = "" if math.isnan(run.api_time) else f"; API call p50 {_ms(run.api_time)}"
    return (
        f"{run.rate:.1f} jobs/s of {run.ceiling:.1f} max ({run.ratio:.1%}); "
        f"{run.jobs} jobs, MAX_CONCURRENT_JOBS={run.concurrency}{api}"
    )


def _runs(rates: Sequence[float]) -> str:
    """``; median of 3 runs, 1,900-2,300`` (nothing for a single run)."""
    if len(rates) < 2:
        return ""
    return f"; median of {len(rates)} runs, {min(rates):,.0f}–{max(rates):,.0f}"


def _memory_row(key: str, run: ProcessRun) -> Row:
    kind = "photo-sized" if run.photo_like else "the fake's flat-colour"
    result = (
        f"{_mb(run.peak_rss)} peak (idle {_mb(run.idle_rss)}); {run.memory_jobs} jobs × 8 "
        f"images 1024×1024, {kind} JPEGs of {run.image_bytes / 1000:.0f} KB"
    )
    label = f"peak RSS, bot process, {'photo-sized' if run.photo_like else 'flat'} images"
    return Row(key, label, result, "< 150 MB", run.peak_rss < PEAK_RSS)


def build_report(results: Results, *, command: str) -> Report:
    (mid_b, top_b), (mid_s, top_s) = results.bursts, results.steady
    flat = results.process_flat
    own = flat.burst or LatencyRun("burst, bot in its own process (not run)", 0, 0.0)
    speedup = results.queue.rate / results.naive.rate
    others = f"1 job while {top_s.in_flight - 1} others are in flight"
    rows = [
        _overhead_row(
            "overhead_sequential", "overhead, 1 job in flight", results.sequential, judged=False
        ),
        _overhead_row(
            "overhead_burst_mid", f"overhead, {mid_b.in_flight} jobs at once", mid_b, judged=False
        ),
        _overhead_row(
            "overhead_burst_top", f"overhead, {top_b.in_flight} jobs at once", top_b, judged=True
        ),
        _overhead_row(
            "overhead_steady_mid",
            f"overhead, 1 job while {mid_s.in_flight - 1} others are in flight",
            mid_s,
            judged=False,
        ),
        _overhead_row("overhead_steady_top", f"overhead, {others}", top_s, judged=True),
        _overhead_row(
            "overhead_own_process",
            f"overhead, {own.in_flight} jobs at once, bot in its own process",
            own,
            judged=True,
        ),
        Row(
            "throughput_queue",
            "throughput, the queue",
            _throughput(results.queue),
            "≥ 95 % of max",
            results.queue.ratio >= THROUGHPUT_RATIO,
        ),
        Row(
            "throughput_own_process",
            "throughput, the queue, bot in its own process",
            _throughput(results.own_queue),
            "≥ 95 % of max",
            results.own_queue.ratio >= THROUGHPUT_RATIO,
        ),
        Row(
            "throughput_naive",
            "throughput, naive baseline (one job at a time)",
            f"{_throughput(results.naive)}; the queue is {speedup:.1f}× faster",
        ),
        Row(
            "throughput_capacity",
            "throughput, capacity (bot + fakes on one event loop)",
            _throughput(results.capacity),
        ),
        _lag_row("loop_lag_steady", f"event-loop lag p99, {others}", top_s.loop_lag),
        _lag_row(
            "loop_lag_burst", f"event-loop lag p99, {top_b.in_flight} jobs at once", top_b.loop_lag
        ),
        _lag_row(
            "loop_lag_own_process",
            f"event-loop lag p99, {own.in_flight} jobs at once, bot in its own process",
            own.loop_lag,
            note=_gc_note(flat),
        ),
        _ack_row("ack_steady", f"time to acknowledge p99, {others}", top_s),
        _ack_row("ack_burst", f"time to acknowledge p99, {top_b.in_flight} jobs at once", top_b),
        Row(
            "bot_cpu",
            "bot CPU (its own process)",
            f"{flat.cpu_per_job * 1000:.1f} ms per one-image job; "
            f"{flat.cpu_per_big_image * 1000:.1f} ms per 1024×1024 image",
        ),
        _memory_row("memory_flat", flat),
        _memory_row("memory_photo", results.process_photo),
        Row(
            "ledger",
            "ledger reserve+commit, file DB",
            f"{results.ledger.rate:,.0f} per second ({results.ledger.pairs} pairs, one at a time"
            f"{_runs(results.ledger.rates)})",
            "≥ 300/s",
            results.ledger.rate >= LEDGER_RATE,
        ),
        Row(
            "ledger_concurrent",
            "ledger reserve+commit, file DB, concurrent",
            f"{results.ledger.concurrent_rate:,.0f} per second ({results.ledger.pairs} pairs, "
            f"{LEDGER_CONCURRENCY} at a time{_runs(results.ledger.concurrent_rates)})",
            "≥ 300/s",
            results.ledger.concurrent_rate >= LEDGER_RATE,
        ),
    ]
    rows += [Row(*fields) for fields in backlog_rows(results.backlog, results.paced)]
    details = [results.sequential, *results.bursts, *results.steady]
    details += [run for run in (flat.sequential, flat.burst) if run is not None]
    return Report(rows, details, environment(command, results))


def _cpu_model() -> str:
    with_model = Path("/proc/cpuinfo")
    if with_model.exists():
        for line in with_model.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def _code_version() -> str:
    """The commit measured, and whether the working tree had changes (read-only git)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{commit} + uncommitted changes" if dirty else commit


def environment(command: str, results: Results) -> dict[str, str]:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    profile = results.profile
    return {
        "command": f"`{command}`",
        "code": _code_version(),
        "date": now.isoformat().replace("+00:00", " UTC"),
        "machine": f"{os.cpu_count()} cores ({_cpu_model()}), {platform.system()} "
        f"{platform.release()}",
        "software": f"Python {platform.python_version()} ({sys.implementation.name}), "
        f"discord.py {_version('discord.py')}, aiohttp {_version('aiohttp')}, "
        f"event loop {describe(profile.event_loop)} (EVENT_LOOP={profile.event_loop})",
        "profile": f"{profile.name}: API latency {profile.latency * 1000:.0f} ms, "
        f"run took {results.seconds:.0f} s",
        "load average": f"{results.load[0]:.2f} at the start, {results.load[1]:.2f} at the end "
        "(1 minute; other work on the machine skews the figures)",
    }


def write_readme(report: Report, path: Path = README) -> None:
    """Replace the results block of ``path`` (created with a skeleton if missing)."""
    block = f"{START}\n{report.markdown()}{END}"
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START in text and END in text:
        pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
