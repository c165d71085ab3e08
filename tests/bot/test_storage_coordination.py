"""Storage: what several processes sharing one database coordinate through it.

Job owners and heartbeats (crash recovery that leaves a live process's jobs
alone), the per-member limit on open jobs, the API-call slots and the shared
request rate. Every test that takes ``database_url`` runs on a SQLite file and on
a fresh PostgreSQL database (``tests/pg.py``); a second Storage opened on the
same database stands for a second process.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.storage import Storage, open_storage
from bot.storage._sqlite_setup import sqlite_path
from bot.storage.base import Reserved, ReserveRejected
from bot.storage.records import JobRecord, JobStatus, NewJob
from tests.bot.test_storage import is_sqlite

GUILD = 111_111_111_111_111_111
OTHER_GUILD = 222_222_222_222_222_222
CHANNEL = 333_333_333_333_333_333
USER = 444_444_444_444_444_444
OTHER_USER = 555_555_555_555_555_555
DEFAULT = 100
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A wall clock the test moves by hand (UTC)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def new_job(
    *,
    guild: int = GUILD,
    user: int = USER,
    owner: str | None = None,
    max_active: int | None = None,
    units: int = 2,
    images: int = 1,
    parent: int | None = None,
) -> NewJob:
    return NewJob(
        guild_id=guild,
        channel_id=CHANNEL,
        user_id=user,
        params={"prompt": "a fox"},
        units_per_image=units,
        images_total=images,
        parent_job_id=parent,
        owner=owner,
        max_active=max_active,
    )


async def reserve(storage: Storage, job: NewJob) -> Reserved | ReserveRejected:
    return await storage.reserve_job(job, default_credits=DEFAULT, note=None)


async def reserved(storage: Storage, job: NewJob) -> JobRecord:
    result = await reserve(storage, job)
    assert isinstance(result, Reserved), result
    return result.job


async def refund(storage: Storage, job: JobRecord) -> None:
    settled = await storage.finish_job(
        job.id,
        status=JobStatus.REFUNDED,
        images_delivered=0,
        committed=0,
        refunded=job.cost,
        error="test",
        commit_note=None,
        refund_note=None,
    )
    assert settled is not None


async def raw_fetch(url: str, statement: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows straight from the database, behind the interface (``$n`` parameters)."""
    if is_sqlite(url):
        with contextlib.closing(sqlite3.connect(Path(sqlite_path(url)), timeout=5)) as other:
            sqlite_statement = statement
            for number in range(len(args), 0, -1):
                sqlite_statement = sqlite_statement.replace(f"${number}", f"?{number}")
            return [tuple(row) for row in other.execute(sqlite_statement, args).fetchall()]
    connection = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await connection.fetch(statement, *args)]
    finally:
        await connection.close()


def ids(jobs: list[JobRecord]) -> list[int]:
    return [job.id for job in jobs]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def clocked(database_url: str, clock: FakeClock) -> AsyncIterator[Storage]:
    """A Storage whose "now" is ``clock`` (on PostgreSQL too, instead of the server's)."""
    opened = await open_storage(database_url, clock=clock)
    yield opened
    await opened.close()


@pytest.fixture
async def second(database_url: str, storage: Storage) -> AsyncIterator[Storage]:
    """Another process on the same database (opened after ``storage`` migrated it)."""
    opened = await open_storage(database_url)
    yield opened
    await opened.close()


# -- the backend says whether it is shared ------------------------------------------------


async def test_only_postgres_is_shared(storage: Storage, backend: str) -> None:
    assert storage.shared is (backend == "postgresql")


# -- job owners ---------------------------------------------------------------------------


async def test_the_owner_is_stored_and_returned_everywhere(storage: Storage) -> None:
    owned = await reserved(storage, new_job(owner="host-1:42:ab12"))
    unowned = await reserved(storage, new_job())
    assert owned.owner == "host-1:42:ab12"
    assert unowned.owner is None

    fetched = await storage.get_job(owned.id)
    assert fetched is not None and fetched.owner == "host-1:42:ab12"
    listed = await storage.list_jobs(statuses={JobStatus.QUEUED})
    assert [(job.id, job.owner) for job in listed] == [
        (owned.id, "host-1:42:ab12"),
        (unowned.id, None),
    ]
    started = await storage.start_job(owned.id)
    assert started is not None and started.owner == "host-1:42:ab12"
    settled = await storage.finish_job(
        owned.id,
        status=JobStatus.SUCCEEDED,
        images_delivered=1,
        committed=2,
        refunded=0,
        error=None,
        commit_note=None,
        refund_note=None,
    )
    assert settled is not None and settled.job.owner == "host-1:42:ab12"
    recovered = await storage.recoverable_jobs(None, stale_after=60)
    assert [(job.id, job.owner) for job in recovered] == [(unowned.id, None)]
    assert await storage.audit() == []


# -- the per-member limit on open jobs ----------------------------------------------------


async def test_max_active_refuses_with_figures_and_changes_nothing(storage: Storage) -> None:
    first = await reserved(storage, new_job(owner="a", max_active=2))
    await reserved(storage, new_job(owner="b", max_active=2))  # any owner counts
    await storage.start_job(first.id)  # running jobs count as much as queued ones
    balance = await storage.get_balance(GUILD)
    entries = await storage.count_ledger_entries(GUILD)
    assert balance == DEFAULT - 4

    refused = await reserve(storage, new_job(owner="a", max_active=2, units=3))
    assert refused == ReserveRejected("too_many_jobs", balance=balance, cost=3, used=2)
    assert await storage.get_balance(GUILD) == balance
    assert await storage.count_ledger_entries(GUILD) == entries
    assert len(await storage.list_jobs(statuses={JobStatus.QUEUED, JobStatus.RUNNING})) == 2
    # a higher limit, or none at all, lets it through
    assert isinstance(await reserve(storage, new_job(max_active=3)), Reserved)
    assert isinstance(await reserve(storage, new_job()), Reserved)

    # only this member's open jobs in this guild count
    assert isinstance(await reserve(storage, new_job(user=OTHER_USER, max_active=1)), Reserved)
    assert isinstance(await reserve(storage, new_job(guild=OTHER_GUILD, max_active=1)), Reserved)
    # a settled job frees its place
    refused = await reserve(storage, new_job(max_active=4))
    assert isinstance(refused, ReserveRejected) and refused.used == 4
    await refund(storage, first)
    assert isinstance(await reserve(storage, new_job(max_active=4)), Reserved)
    assert await storage.audit() == []


async def test_max_active_is_checked_before_the_balance_and_after_the_parent(
    storage: Storage,
) -> None:
    parent = await reserved(storage, new_job(units=DEFAULT - 1))
    assert await storage.get_balance(GUILD) == 1
    # both too many jobs and too little money: the limit is what the member hears
    assert await reserve(storage, new_job(max_active=1, units=5)) == ReserveRejected(
        "too_many_jobs", balance=1, cost=5, used=1
    )
    # an unknown parent comes first, as without a limit
    refused = await reserve(storage, new_job(max_active=1, parent=parent.id + 100))
    assert isinstance(refused, ReserveRejected) and refused.reason == "unknown_parent"
    # under the limit, the other checks run as before
    refused = await reserve(storage, new_job(max_active=2, units=5))
    assert isinstance(refused, ReserveRejected) and refused.reason == "insufficient"


async def test_max_active_zero_on_a_new_guild_does_not_create_it(storage: Storage) -> None:
    refused = await reserve(storage, new_job(max_active=0))
    assert refused == ReserveRejected("too_many_jobs", balance=DEFAULT, cost=2, used=0)
    assert await storage.get_balance(GUILD) is None
    assert await storage.count_ledger_entries(GUILD) == 0


async def test_concurrent_reservations_respect_max_active(
    storage: Storage, second: Storage
) -> None:
    # 20 requests of one member at once, from two processes: exactly 3 get through.
    stores = (storage, second)
    results = await asyncio.wait_for(
        asyncio.gather(
            *(reserve(stores[n % 2], new_job(owner=f"p{n % 2}", max_active=3)) for n in range(20))
        ),
        timeout=60,
    )
    granted = [result for result in results if isinstance(result, Reserved)]
    refused = [result for result in results if isinstance(result, ReserveRejected)]
    assert len(granted) == 3
    assert len(refused) == 17
    assert {result.reason for result in refused} == {"too_many_jobs"}
    assert {result.used for result in refused} == {3}
    assert await storage.get_balance(GUILD) == DEFAULT - 3 * 2
    assert len(await second.list_jobs(statuses={JobStatus.QUEUED})) == 3
    assert await storage.audit() == []


# -- heartbeats and recovery -----------------------------------------------------------


async def test_recoverable_jobs_leave_a_live_process_alone(
    clocked: Storage, clock: FakeClock
) -> None:
    storage = clocked
    await storage.heartbeat("me")
    await storage.heartbeat("dead")
    await storage.heartbeat("live")
    mine = await reserved(storage, new_job(owner="me"))
    unowned = await reserved(storage, new_job())
    dead = await reserved(storage, new_job(owner="dead"))
    ghost = await reserved(storage, new_job(owner="ghost"))  # never sent a heartbeat
    live = await reserved(storage, new_job(owner="live"))
    settled = await reserved(storage, new_job(owner="dead"))
    await refund(storage, settled)
    running = await storage.start_job(dead.id)
    assert running is not None

    clock.advance(100)
    await storage.heartbeat("live")
    clock.advance(30)  # live: 30 s ago; dead: 130 s ago

    everything = [mine.id, unowned.id, dead.id, ghost.id, live.id]
    assert ids(await storage.recoverable_jobs(None, stale_after=60)) == everything
    # a longer silence allowed: only unowned jobs and a never-seen owner's (asked
    # first: on PostgreSQL, a recovery by a process fences those silent too long)
    assert ids(await storage.recoverable_jobs("nobody", stale_after=200)) == [
        unowned.id,
        ghost.id,
    ]
    recoverable = await storage.recoverable_jobs("me", stale_after=60)
    assert ids(recoverable) == [mine.id, unowned.id, dead.id, ghost.id]
    assert [job.owner for job in recoverable] == ["me", None, "dead", "ghost"]
    assert recoverable[2].status is JobStatus.RUNNING
    # "me" is stale too, but its own jobs are recoverable by it whatever its heartbeat
    assert ids(await storage.recoverable_jobs("live", stale_after=60)) == everything
    # a process nobody is named like: only unowned and stale jobs
    assert ids(await storage.recoverable_jobs("nobody", stale_after=60)) == [
        mine.id,
        unowned.id,
        dead.id,
        ghost.id,
    ]

    # the live process falls silent: its jobs become recoverable...
    clock.advance(31)
    assert live.id in ids(await storage.recoverable_jobs("me", stale_after=60))
    # ...until it sends a heartbeat again
    await storage.heartbeat("live")
    assert live.id not in ids(await storage.recoverable_jobs("me", stale_after=60))
    # a clean shutdown forgets it at once
    await storage.release_owner("live")
    assert live.id in ids(await storage.recoverable_jobs("me", stale_after=60))


async def test_heartbeat_keeps_the_start_time(
    clocked: Storage, clock: FakeClock, database_url: str
) -> None:
    await clocked.heartbeat("me")
    clock.advance(42)
    await clocked.heartbeat("me")
    rows = await raw_fetch(
        database_url, "SELECT started_at, heartbeat_at FROM job_owners WHERE owner = $1", "me"
    )
    assert len(rows) == 1
    started, beat = rows[0]
    if is_sqlite(database_url):
        started, beat = datetime.fromisoformat(started), datetime.fromisoformat(beat)
    assert (started, beat) == (T0, T0 + timedelta(seconds=42))
    await clocked.release_owner("me")
    await clocked.release_owner("me")  # twice: nothing left to forget
    assert await raw_fetch(database_url, "SELECT owner FROM job_owners") == []


async def test_recovery_with_the_servers_clock(storage: Storage, second: Storage) -> None:
    # Real time, two processes: a fresh heartbeat is live, a long silence is not.
    await storage.heartbeat("a")
    await second.heartbeat("b")
    a_job = await reserved(storage, new_job(owner="a"))
    b_job = await reserved(second, new_job(owner="b"))
    assert ids(await storage.recoverable_jobs("a", stale_after=60)) == [a_job.id]
    assert ids(await second.recoverable_jobs("b", stale_after=60)) == [b_job.id]
    await asyncio.sleep(0.05)
    assert ids(await storage.recoverable_jobs("a", stale_after=0.01)) == [a_job.id, b_job.id]


# -- API-call slots -----------------------------------------------------------------------


async def test_slots_are_taken_lowest_first_and_released(storage: Storage) -> None:
    assert [await storage.acquire_slot("a", limit=4, ttl=60) for _ in range(3)] == [0, 1, 2]
    assert await storage.acquire_slot("b", limit=4, ttl=60) == 3
    assert await storage.acquire_slot("b", limit=4, ttl=60) is None
    assert await storage.acquire_slot("b", limit=0, ttl=60) is None

    await storage.release_slot("b", 1)  # not b's: nothing happens
    assert await storage.acquire_slot("b", limit=4, ttl=60) is None
    await storage.release_slot("a", 1)
    assert await storage.acquire_slot("b", limit=4, ttl=60) == 1
    await storage.release_slot("a", 1)  # released already, now b's: nothing happens
    assert await storage.acquire_slot("c", limit=4, ttl=60) is None
    # a larger limit opens more slots; a smaller one ignores those above it
    assert await storage.acquire_slot("c", limit=5, ttl=60) == 4
    await storage.release_slot("c", 4)
    assert await storage.acquire_slot("c", limit=2, ttl=60) is None

    # a clean shutdown frees every slot of the owner, and only those
    await storage.release_owner("a")
    assert [await storage.acquire_slot("c", limit=4, ttl=60) for _ in range(3)] == [0, 2, None]
    await storage.release_slot("a", 9)  # never existed: nothing happens


# SQLite's slots are leases that expire; PostgreSQL's are session locks that end
# with their connection (tests/bot/test_pg_session_locks.py).
@pytest.mark.parametrize("backend", ["sqlite"])
async def test_an_expired_slot_is_free_again(clocked: Storage, clock: FakeClock) -> None:
    storage = clocked
    assert await storage.acquire_slot("a", limit=1, ttl=10) == 0
    clock.advance(9.5)
    assert await storage.acquire_slot("b", limit=1, ttl=10) is None
    clock.advance(1)
    assert await storage.acquire_slot("b", limit=1, ttl=10) == 0
    await storage.release_slot("a", 0)  # a's time ran out and the slot moved on
    assert await storage.acquire_slot("c", limit=1, ttl=10) is None
    await storage.release_slot("b", 0)
    assert await storage.acquire_slot("c", limit=1, ttl=10) == 0


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_slot_expires_in_real_time(storage: Storage, second: Storage) -> None:
    assert await storage.acquire_slot("a", limit=1, ttl=0.2) == 0
    assert await second.acquire_slot("b", limit=1, ttl=0.2) is None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while (slot := await second.acquire_slot("b", limit=1, ttl=30)) is None:
        assert loop.time() < deadline, "the slot never expired"
        await asyncio.sleep(0.02)
    assert slot == 0
    assert await storage.acquire_slot("a", limit=1, ttl=0.2) is None


async def test_concurrent_acquirers_never_share_a_slot(storage: Storage, second: Storage) -> None:
    # 30 workers in two processes, 4 slots: at most 4 held at any moment, never
    # the same one twice, and every worker gets its turn.
    limit = 4
    held: set[int] = set()
    peak = 0
    served: list[int] = []

    async def worker(number: int) -> None:
        nonlocal peak
        store = (storage, second)[number % 2]
        owner = f"worker-{number}"
        for _ in range(5000):  # polling: the database is the only place to wait on
            slot = await store.acquire_slot(owner, limit=limit, ttl=30)
            if slot is not None:
                break
            await asyncio.sleep(0.002)
        else:
            pytest.fail(f"{owner} never got a slot")
        assert 0 <= slot < limit
        assert slot not in held, f"slot {slot} handed out twice"
        held.add(slot)
        peak = max(peak, len(held))
        await asyncio.sleep(0.02)
        held.discard(slot)  # before the release commits: another may take it then
        await store.release_slot(owner, slot)
        served.append(number)

    await asyncio.wait_for(asyncio.gather(*(worker(n) for n in range(30))), timeout=60)
    assert sorted(served) == list(range(30))
    assert peak == limit
    # all released: the next acquirer gets the lowest slot
    assert await storage.acquire_slot("after", limit=limit, ttl=30) == 0


async def test_bad_slot_arguments_are_refused(storage: Storage) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await storage.acquire_slot("a", limit=1, ttl=0)
    with pytest.raises(ValueError, match="limit"):
        await storage.acquire_slot("a", limit=-1, ttl=1)


# -- the shared request rate --------------------------------------------------------------


async def test_rate_tokens_in_a_sliding_window(clocked: Storage, clock: FakeClock) -> None:
    storage = clocked
    assert await storage.take_rate_token("segmind", limit=2, period=10) == 0
    clock.advance(3)
    assert await storage.take_rate_token("segmind", limit=2, period=10) == 0
    clock.advance(1)
    # the oldest call (4 s ago) leaves the window in 6 s; nothing is recorded
    assert await storage.take_rate_token("segmind", limit=2, period=10) == pytest.approx(6)
    clock.advance(5)
    assert await storage.take_rate_token("segmind", limit=2, period=10) == pytest.approx(1)
    # another key has a window of its own
    assert await storage.take_rate_token("other", limit=1, period=10) == 0
    clock.advance(1)  # exactly one period after the first call: it has left
    assert await storage.take_rate_token("segmind", limit=2, period=10) == 0
    assert await storage.take_rate_token("segmind", limit=2, period=10) == pytest.approx(3)


async def test_rate_tokens_in_real_time_are_shared_by_processes(
    storage: Storage, second: Storage
) -> None:
    assert await storage.take_rate_token("segmind", limit=3, period=0.5) == 0
    assert await second.take_rate_token("segmind", limit=3, period=0.5) == 0
    assert await storage.take_rate_token("segmind", limit=3, period=0.5) == 0
    wait = await second.take_rate_token("segmind", limit=3, period=0.5)
    assert 0 < wait <= 0.5
    assert 0 < await storage.take_rate_token("segmind", limit=3, period=0.5) <= wait
    await asyncio.sleep(wait + 0.05)
    assert await second.take_rate_token("segmind", limit=3, period=0.5) == 0


async def test_concurrent_rate_tokens_grant_exactly_the_limit(
    storage: Storage, second: Storage
) -> None:
    stores = (storage, second)
    waits = await asyncio.wait_for(
        asyncio.gather(
            *(stores[n % 2].take_rate_token("burst", limit=5, period=60) for n in range(20))
        ),
        timeout=60,
    )
    assert waits.count(0) == 5
    assert all(0 < wait <= 60 for wait in waits if wait != 0)


async def test_bad_rate_arguments_are_refused(storage: Storage) -> None:
    with pytest.raises(ValueError, match="limit"):
        await storage.take_rate_token("k", limit=0, period=1)
    with pytest.raises(ValueError, match="period"):
        await storage.take_rate_token("k", limit=1, period=0)


async def test_a_posted_job_no_longer_counts_against_max_active(storage: Storage) -> None:
    first = await reserved(storage, new_job(max_active=1))
    assert isinstance(await reserve(storage, new_job(max_active=1)), ReserveRejected)
    marked = await storage.mark_delivering(first.id)
    assert marked is not None and marked.job.delivering and marked.job.status.is_open
    # Being posted still counts (the post may fail); posted, it is settled with its message.
    assert isinstance(await reserve(storage, new_job(max_active=1)), ReserveRejected)
    settled = await storage.finish_job(
        first.id, status=JobStatus.SUCCEEDED, images_delivered=first.images_total,
        committed=first.cost, refunded=0, error=None, commit_note=None, refund_note=None,
        message_id=42,
    )  # fmt: skip
    assert settled is not None and settled.job.message_id == 42
    second = await reserved(storage, new_job(max_active=1))
    assert isinstance(await reserve(storage, new_job(max_active=1)), ReserveRejected)
    assert second.delivering_at is None


async def test_only_an_open_job_can_be_marked_delivering(storage: Storage) -> None:
    job = await reserved(storage, new_job())
    await refund(storage, job)
    assert await storage.mark_delivering(job.id) is None
    assert await storage.mark_delivering(10**12) is None
    assert (await storage.get_job(job.id)).delivering_at is None  # type: ignore[union-attr]
