"""PostgreSQL: what a process holds in the database ends with its connections.

API slots and each process's liveness are session advisory locks
(bot/storage/_pg_locks.py). A process that dies, however it dies, loses its
connections, and with them everything it held: these tests end a process's
connections on the server (``pg_terminate_backend``, what the server does when
a killed process's sockets close or its keepalives go unanswered) and check
that the others, or the process's next run, are not held up by it.
"""

from __future__ import annotations

import asyncio
import socket

import asyncpg
import pytest

from bot.coordination import owner_name
from bot.storage import Storage
from bot.storage import _pg_locks as sql
from bot.storage._pg_locks import PgStorage
from bot.storage._pg_setup import KEEPALIVE, PgDatabase
from bot.storage._settings import RATE_LOCK_CLASS
from tests.bot.conftest import opened_storage
from tests.bot.test_storage_coordination import ids, new_job, raw_fetch, reserved

# Ends the sessions holding advisory locks of one class (optionally one key) in
# this database, and waits (up to 5 s) until they are gone.
_TERMINATE_HOLDERS = """
    SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_locks
     WHERE locktype = 'advisory' AND granted AND objsubid = 2
       AND classid = $1::bigint::oid AND ($2::bigint IS NULL OR objid = $2::bigint::oid)
       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""

_HELD = """
    SELECT COUNT(*) FROM pg_locks
     WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = $1::bigint::oid
       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


async def terminate_holders(url: str, lock_class: int, key: int | None = None) -> int:
    [(count,)] = await raw_fetch(url, _TERMINATE_HOLDERS, lock_class, key)
    return int(count)


async def held(url: str, lock_class: int) -> int:
    [(count,)] = await raw_fetch(url, _HELD, lock_class)
    return int(count)


async def owner_key(url: str, owner: str) -> int:
    [(key,)] = await raw_fetch(url, "SELECT lock_key FROM job_owners WHERE owner = $1", owner)
    assert isinstance(key, int)
    return key


# -- API slots ----------------------------------------------------------------------------


async def test_a_slot_whose_connection_ends_is_free_at_once(
    pg_url: str, first: Storage, second: Storage
) -> None:
    assert [await first.acquire_slot("a", limit=2, ttl=900) for _ in range(2)] == [0, 1]
    assert await second.acquire_slot("b", limit=2, ttl=900) is None

    assert await terminate_holders(pg_url, sql.API_SLOT_LOCK_CLASS) == 2
    # no lease to wait for: both slots are free the moment their connections end
    assert [await second.acquire_slot("b", limit=2, ttl=900) for _ in range(2)] == [0, 1]
    # the first process gives back slots it lost without error, and its broken
    # connections are not reused: its next slot is a new one
    await first.release_slot("a", 0)
    await first.release_slot("a", 1)
    assert await first.acquire_slot("a", limit=3, ttl=900) == 2
    assert await held(pg_url, sql.API_SLOT_LOCK_CLASS) == 3


async def test_one_attempt_takes_one_lock_and_a_release_leaves_none(
    pg_url: str, first: Storage, second: Storage
) -> None:
    assert await first.acquire_slot("a", limit=4, ttl=900) == 0
    assert await held(pg_url, sql.API_SLOT_LOCK_CLASS) == 1  # not every free slot
    await first.release_slot("a", 0)
    assert await held(pg_url, sql.API_SLOT_LOCK_CLASS) == 0
    # the connection went back unlocked: another owner on it gets slot 0 again
    assert await first.acquire_slot("c", limit=4, ttl=900) == 0
    assert await held(pg_url, sql.API_SLOT_LOCK_CLASS) == 1

    # closing the storage (a process's exit) gives back whatever it held
    assert await first.acquire_slot("c", limit=4, ttl=900) == 1
    await first.close()
    assert [await second.acquire_slot("b", limit=4, ttl=900) for _ in range(3)] == [0, 1, 2]


# -- turns for a slot ---------------------------------------------------------------------


async def _take_turn(storage: Storage, owner: str) -> None:
    async with storage.slot_turn(owner):
        pass


async def test_a_turn_cancelled_while_queued_leaves_nothing_behind(
    pg_url: str, first: Storage, second: Storage
) -> None:
    async with first.slot_turn("a"):
        queued = asyncio.create_task(_take_turn(second, "b"))
        await asyncio.sleep(0.2)
        assert not queued.done()  # its process waits behind a's turn
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
    # neither the process's own line nor the server's lock is left held
    await asyncio.wait_for(_take_turn(second, "b"), 5)
    assert await held(pg_url, sql.SLOT_TURN_LOCK_CLASS) == 0


async def test_a_process_frozen_in_its_turn_is_fenced_off(
    pg_url: str, first: Storage, second: Storage
) -> None:
    await first.heartbeat("frozen")
    await second.heartbeat("b")
    async with first.slot_turn("frozen"):  # it froze while its turn was on
        await raw_fetch(
            pg_url,
            "UPDATE job_owners SET heartbeat_at = now() - interval '61 seconds'"
            " WHERE owner = 'frozen'",
        )
        waiting = asyncio.create_task(_take_turn(second, "b"))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await second.recoverable_jobs("b", stale_after=60)  # ends the frozen one's sessions
        await asyncio.wait_for(waiting, 10)
    # thawed, its turn ends without an error, and it can wait for a slot again
    await asyncio.wait_for(_take_turn(first, "frozen"), 5)


# -- owner liveness -----------------------------------------------------------------------


async def test_an_owner_whose_lock_ends_is_dead_at_once_and_forgotten(
    pg_url: str, first: Storage, second: Storage
) -> None:
    await first.heartbeat("a")
    await second.heartbeat("b")
    a_job = await reserved(first, new_job(owner="a"))
    b_job = await reserved(second, new_job(owner="b"))
    assert ids(await second.recoverable_jobs("b", stale_after=60)) == [b_job.id]

    assert await terminate_holders(pg_url, sql.OWNER_LOCK_CLASS, await owner_key(pg_url, "a")) == 1
    # "a" sent a heartbeat a moment ago, but its lock is gone: it is dead
    assert ids(await second.recoverable_jobs("b", stale_after=60)) == [a_job.id, b_job.id]
    assert ids(await second.recoverable_jobs("nobody", stale_after=60)) == [a_job.id]

    # the next process to start forgets it; its job stays recoverable
    async with opened_storage(pg_url) as third:
        await third.heartbeat("c")
        rows = await raw_fetch(pg_url, "SELECT owner FROM job_owners ORDER BY owner")
        assert rows == [("b",), ("c",)]
        assert ids(await third.recoverable_jobs("c", stale_after=60)) == [a_job.id]


async def test_a_live_process_that_lost_its_lock_takes_a_new_one(
    pg_url: str, first: Storage, second: Storage
) -> None:
    await first.heartbeat("a")
    a_job = await reserved(first, new_job(owner="a"))
    old_key = await owner_key(pg_url, "a")
    await terminate_holders(pg_url, sql.OWNER_LOCK_CLASS, old_key)
    assert ids(await second.recoverable_jobs("b", stale_after=60)) == [a_job.id]
    # its next heartbeat notices and locks again: live once more
    await first.heartbeat("a")
    assert await held(pg_url, sql.OWNER_LOCK_CLASS) == 1
    assert ids(await second.recoverable_jobs("b", stale_after=60)) == []


async def test_an_owner_without_a_lock_is_judged_by_its_heartbeat(
    pg_url: str, first: Storage, second: Storage
) -> None:
    # rows written by a process of an older version: no lock_key
    await raw_fetch(
        pg_url,
        "INSERT INTO job_owners (owner, started_at, heartbeat_at) VALUES "
        "('fresh', now(), now()), ('silent', now(), now() - interval '2 minutes')",
    )
    fresh = await reserved(first, new_job(owner="fresh"))
    silent = await reserved(first, new_job(owner="silent"))
    await second.heartbeat("b")  # a new process starts: older owners are not forgotten
    assert ids(await second.recoverable_jobs("b", stale_after=60)) == [silent.id]
    assert ids(await second.recoverable_jobs("b", stale_after=600)) == []
    rows = await raw_fetch(pg_url, "SELECT owner FROM job_owners ORDER BY owner")
    assert rows == [("b",), ("fresh",), ("silent",)]
    assert fresh.id not in ids(await second.recoverable_jobs("b", stale_after=60))


async def test_a_frozen_process_is_fenced_off_and_its_slots_freed(
    pg_url: str, first: Storage, second: Storage
) -> None:
    await first.heartbeat("frozen")
    job = await reserved(first, new_job(owner="frozen"))
    assert [await first.acquire_slot("frozen", limit=2, ttl=900) for _ in range(2)] == [0, 1]
    await second.heartbeat("b")
    # its loop hangs, its connections live on: no heartbeat for over a minute
    await raw_fetch(
        pg_url,
        "UPDATE job_owners SET heartbeat_at = now() - interval '61 seconds' WHERE owner = 'frozen'",
    )
    assert await second.acquire_slot("b", limit=2, ttl=900) is None
    assert ids(await second.recoverable_jobs("b", stale_after=60)) == [job.id]
    # the recovery ended its lock sessions (the server drops them a moment later)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (
        await held(pg_url, sql.API_SLOT_LOCK_CLASS) or await held(pg_url, sql.OWNER_LOCK_CLASS) > 1
    ):
        assert loop.time() < deadline, "the frozen process kept its locks"
        await asyncio.sleep(0.02)
    assert [await second.acquire_slot("b", limit=2, ttl=900) for _ in range(2)] == [0, 1]
    # the caller's own sessions were spared
    assert ids(await second.recoverable_jobs("b", stale_after=60)) == [job.id]
    assert await held(pg_url, sql.OWNER_LOCK_CLASS) == 1
    # thawed, the process gives back what it lost without error and locks again
    await first.release_slot("frozen", 0)
    await first.heartbeat("frozen")
    assert await held(pg_url, sql.OWNER_LOCK_CLASS) == 2


# -- a restart ----------------------------------------------------------------------------


async def test_a_restart_finds_everything_its_killed_run_held_free(pg_url: str) -> None:
    before = owner_name([0])
    async with opened_storage(pg_url) as killed:
        await killed.heartbeat(before)
        job = await reserved(killed, new_job(owner=before))
        await killed.start_job(job.id)
        assert [await killed.acquire_slot(before, limit=2, ttl=900) for _ in range(2)] == [0, 1]
        # kill -9: the server ends every session of the process at once
        await raw_fetch(
            pg_url,
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )

        after = owner_name([0])
        assert after != before  # the next run is someone else, on the same host and shards
        async with opened_storage(pg_url) as restarted:
            await restarted.heartbeat(after)
            [recovered] = await restarted.recoverable_jobs(after, stale_after=60)
            assert (recovered.id, recovered.owner) == (job.id, before)
            assert [await restarted.acquire_slot(after, limit=2, ttl=900) for _ in range(2)] == [
                0,
                1,
            ]


def test_every_start_has_a_name_of_its_own() -> None:
    names = {owner_name([0, 1]) for _ in range(50)}
    assert len(names) == 50
    host = socket.gethostname()
    assert all(name.startswith(f"{host}:shards-0-1:") for name in names)
    assert owner_name(None).startswith(f"{host}:shards-all:")


# -- the shared rate and keepalives ---------------------------------------------------------


async def test_a_dead_process_inside_the_rate_window_blocks_nobody(
    pg_url: str, first: Storage
) -> None:
    # A process that died holding the window's lock, mid-transaction.
    dying = await asyncpg.connect(pg_url)
    try:
        await dying.execute("BEGIN")
        await dying.execute(
            f"SELECT pg_advisory_xact_lock({RATE_LOCK_CLASS:d}, hashtext('segmind'))"
        )
        assert await terminate_holders(pg_url, RATE_LOCK_CLASS) == 1
    finally:
        dying.terminate()
    assert await first.take_rate_token("segmind", limit=1, period=60) == 0


async def test_every_connection_asks_for_tcp_keepalives(first: Storage) -> None:
    # without them a lost host's locks would stay until the kernel gives up (hours)
    assert isinstance(first, PgStorage)
    query = "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])"
    database = first._db  # looking inside on purpose
    assert isinstance(database, PgDatabase)
    lock_connection = await database.raw_connect("test")
    try:
        assert dict(await lock_connection.fetch(query, list(KEEPALIVE))) == KEEPALIVE
    finally:
        await lock_connection.close()
    async with first._db.engine.connect() as pooled:
        raw = await pooled.get_raw_connection()
        rows = await raw.driver_connection.fetch(query, list(KEEPALIVE))  # type: ignore[union-attr]
    assert dict(rows) == KEEPALIVE
