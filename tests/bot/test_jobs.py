"""The job queue: fairness, limits, and money that always ends committed or refunded.

The queue talks to a scripted generator (it is API-agnostic by design) and to the
real ledger on a temporary SQLite file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from bot.credit_errors import InsufficientCredits
from bot.credits import CommitResult, CreditLedger, JobRecord
from bot.insight import Insight
from bot.jobs import Delivered, Job, JobProgress, JobQueue, QueueBusy, QueueFull, ShuttingDown
from bot.segmind import (
    GeneratedImage,
    GenerationResult,
    SegmindError,
    SegmindOutOfCredits,
    SegmindRateLimited,
    SegmindUnauthorized,
    Txt2ImgRequest,
)

GUILD, OTHER_GUILD = 111, 222
ALICE, BOB, CAROL = 1, 2, 3


class ScriptedGenerator:
    """Records calls; each call waits for a release when ``gated`` is set."""

    def __init__(self, *, gated: bool = False) -> None:
        self.gated = gated
        self.calls: list[tuple[str, int | None]] = []
        self.in_flight = 0
        self.peak = 0
        self.failures: dict[str, SegmindError] = {}
        self._gate = asyncio.Semaphore(0)
        self._arrived = asyncio.Condition()

    def release(self, count: int = 1) -> None:
        for _ in range(count):
            self._gate.release()

    async def wait_calls(self, count: int) -> None:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.calls) >= count), 5)

    async def generate(self, request: Txt2ImgRequest) -> GenerationResult:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        async with self._arrived:
            self.calls.append((request.prompt, request.seed))
            self._arrived.notify_all()
        try:
            if self.gated:
                await self._gate.acquire()
            error = self.failures.get(f"{request.prompt}:{request.seed}") or self.failures.get(
                request.prompt
            )
            if error is not None:
                raise error
            image = GeneratedImage(
                b"jpeg", "JPEG", request.img_width, request.img_height, request.seed
            )
            return GenerationResult([image], None, 1, 0.0)
        finally:
            self.in_flight -= 1


@dataclass
class RecordingDelivery:
    fail_delivery: bool = False
    progress_seen: list[JobProgress] = field(default_factory=list)
    delivered: list[GeneratedImage] = field(default_factory=list)
    balances: list[int] = field(default_factory=list)
    message_id: int | None = None
    results: list[CommitResult] = field(default_factory=list)
    failures: list[tuple[str, int]] = field(default_factory=list)
    shows_progress: bool = True

    async def progress(self, job: Job, progress: JobProgress) -> None:
        self.progress_seen.append(progress)

    async def deliver(self, job: Job, images: Sequence[GeneratedImage], balance: int) -> Delivered:
        if self.fail_delivery:
            raise RuntimeError("Discord said no")
        self.delivered.extend(images)
        self.balances.append(balance)
        return Delivered(len(images), self.message_id)

    async def finished(self, job: Job, result: CommitResult) -> None:
        self.results.append(result)

    async def failed(self, job: Job, message: str, refunded: int) -> None:
        self.failures.append((message, refunded))


def make_queue(
    generator: ScriptedGenerator, ledger: CreditLedger, *, concurrent: int = 4, per_user: int = 3
) -> JobQueue:
    return JobQueue(generator, ledger, max_concurrent=concurrent, max_per_user=per_user)


async def submit(
    queue: JobQueue,
    *,
    user: int = ALICE,
    guild: int = GUILD,
    prompt: str = "a cat",
    samples: int = 1,
    size: int = 512,
    delivery: RecordingDelivery | None = None,
) -> tuple[Job, RecordingDelivery]:
    delivery = delivery or RecordingDelivery()
    request = Txt2ImgRequest(prompt=prompt, samples=samples, img_width=size, img_height=size)
    job = await queue.enqueue(
        guild_id=guild, channel_id=5, user_id=user, request=request, delivery=delivery
    )
    return job, delivery


async def settle(job: Job) -> None:
    await asyncio.wait_for(job.settled.wait(), 5)


async def test_happy_path_commits_exactly_the_cost(ledger: CreditLedger) -> None:
    generator = ScriptedGenerator()
    queue = make_queue(generator, ledger)
    job, delivery = await submit(queue, samples=4, size=1024)
    await settle(job)
    assert len(delivery.delivered) == 4
    assert [image.seed for image in delivery.delivered] == [
        (job.request.seed + i) % 2**32
        for i in range(4)  # type: ignore[operator]
    ]
    assert delivery.results[0].committed == 16
    assert await ledger.balance(GUILD) == 100 - 16
    assert await ledger.verify()
    assert queue.user_load(GUILD, ALICE) == 0


async def test_seed_is_drawn_once_and_stored(ledger: CreditLedger) -> None:
    generator = ScriptedGenerator()
    queue = make_queue(generator, ledger)
    job, _ = await submit(queue, samples=2)
    await settle(job)
    assert job.request.seed is not None
    stored = await ledger.get_job(job.id)
    assert stored is not None and stored.params["seed"] == job.request.seed
    seed = job.request.seed
    assert sorted(s for _, s in generator.calls) == sorted([seed, (seed + 1) % 2**32])


async def test_concurrency_limit_holds(ledger: CreditLedger) -> None:
    generator = ScriptedGenerator(gated=True)
    queue = make_queue(generator, ledger, concurrent=2)
    jobs = [(await submit(queue, user=user, samples=2))[0] for user in (ALICE, BOB, CAROL)]
    await generator.wait_calls(2)
    assert queue.in_flight == 2
    assert queue.depth == 2  # ALICE's two images fill both slots; BOB and CAROL wait
    generator.release(6)
    for job in jobs:
        await settle(job)
    assert generator.peak == 2
    assert await ledger.balance(GUILD) == 94


async def test_flooding_member_does_not_starve_another(ledger: CreditLedger) -> None:
    generator = ScriptedGenerator(gated=True)
    queue = make_queue(generator, ledger, concurrent=1)
    flood = [(await submit(queue, user=ALICE, prompt="flood", samples=4))[0] for _ in range(3)]
    await generator.wait_calls(1)
    other, _ = await submit(queue, user=BOB, prompt="other")
    generator.release(2)
    await settle(other)
    prompts = [prompt for prompt, _ in generator.calls]
    # BOB's single image ran second, long before ALICE's 12 images drained.
    assert prompts.index("other") == 1
    generator.release(100)
    for job in flood:
        await settle(job)
    assert await ledger.verify()


async def test_round_robin_between_guilds(ledger: CreditLedger) -> None:
    generator = ScriptedGenerator(gated=True)
    queue = make_queue(generator, ledger, concurrent=1)
    first, _ = await submit(queue, guild=GUILD, prompt="g1", samples=3)
    second, _ = await submit(queue, guild=OTHER_GUILD, prompt="g2", samples=3)
    generator.release(6)
    await settle(first)
    await settle(second)
    assert [p for p, _ in generator.calls] == ["g1", "g2", "g1", "g2", "g1", "g2"]


async def test_queue_positions_are_reported(ledger: CreditLedger) -> None:
    generator = ScriptedGenerator(gated=True)
    queue = make_queue(generator, ledger, concurrent=1)
    running, _ = await submit(queue, user=ALICE)
    second, second_delivery = await submit(queue, user=BOB)
    third, third_delivery = await submit(queue, user=CAROL)
    await generator.wait_calls(1)
    assert queue.backlog.position(second) == 1
    assert queue.backlog.position(third) == 2
    await queue.backlog.status_board.refresh()
    [shown] = third_delivery.progress_seen
    assert (shown.state, shown.position) == ("queued", 2)
    assert shown.eta is not None and shown.eta > 0
    generator.release(1)
    await settle(running)
    await queue.backlog.status_board.refresh()
    assert ("queued", 1) in [(p.state, p.position) for p in third_delivery.progress_seen]
    assert any(p.state == "generating" for p in second_delivery.progress_seen)
    generator.release(2)
    for job in (second, third):
        await settle(job)


async def test_a_status_line_that_cannot_be_edited_costs_no_edit(ledger: CreditLedger) -> None:
    generator = ScriptedGenerator(gated=True)
    queue = make_queue(generator, ledger, concurrent=1)
    running, _ = await submit(queue, user=ALICE)
    gone, gone_delivery = await submit(queue, user=BOB, delivery=RecordingDelivery())
    live, live_delivery = await submit(queue, user=CAROL)
    gone_delivery.shows_progress = False  # e.g. its 15-minute token is over
    await generator.wait_calls(1)
    assert await queue.backlog.status_board.refresh() == 1
    assert gone_delivery.progress_seen == []
    assert [(p.state, p.position) for p in live_delivery.progress_seen] == [("queued", 2)]
    generator.release(3)
    for job in (running, gone, live):
        await settle(job)


async def test_per_user_cap_refuses_before_spending(ledger: CreditLedger) -> None:
    generator = ScriptedGenerator(gated=True)
    queue = make_queue(generator, ledger, per_user=2)
    jobs = [(await submit(queue))[0] for _ in range(2)]
    balance = await ledger.balance(GUILD)
    with pytest.raises(QueueFull) as caught:
        await submit(queue)
    assert "limit is 2" in caught.value.user_message
    assert await ledger.balance(GUILD) == balance
    other, _ = await submit(queue, user=BOB)  # other members are unaffected
    generator.release(3)
    for job in [*jobs, other]:
        await settle(job)
    again, _ = await submit(queue)
    generator.release(1)
    await settle(again)


async def test_not_enough_credits_makes_no_call_and_frees_the_slot(ledger: CreditLedger) -> None:
    generator = ScriptedGenerator()
    queue = make_queue(generator, ledger, per_user=1)
    await ledger.set_balance(GUILD, 3, actor_id=None)
    with pytest.raises(InsufficientCredits) as caught:
        await submit(queue, samples=1, size=1024)
    assert caught.value.balance == 3 and caught.value.cost == 4
    assert generator.calls == []
    assert queue.user_load(GUILD, ALICE) == 0
    assert await ledger.balance(GUILD) == 3


async def test_api_failure_refunds_everything_and_says_why(ledger: CreditLedger) -> None:
    generator = ScriptedGenerator()
    generator.failures["bad key"] = SegmindUnauthorized(status=401, api_message="Unauthorized")
    queue = make_queue(generator, ledger)
    job, delivery = await submit(queue, prompt="bad key", samples=2)
    await settle(job)
    assert delivery.delivered == []
    [(message, refunded)] = delivery.failures
    assert "API key was rejected" in message
    assert refunded == 2
    assert await ledger.balance(GUILD) == 100
    stored = await ledger.get_job(job.id)
    assert stored is not None and stored.status == "refunded"


async def test_partial_success_commits_delivered_and_refunds_the_rest(ledger: CreditLedger) -> None:
    generator = ScriptedGenerator()
    queue = make_queue(generator, ledger)
    request = Txt2ImgRequest(prompt="mixed", samples=3, seed=10)
    generator.failures["mixed:11"] = SegmindOutOfCredits(status=406, api_message="no credits")
    delivery = RecordingDelivery()
    job = await queue.enqueue(
        guild_id=GUILD, channel_id=5, user_id=ALICE, request=request, delivery=delivery
    )
    await settle(job)
    assert [image.seed for image in delivery.delivered] == [10, 12]
    assert delivery.results[0].committed == 2 and delivery.results[0].refunded == 1
    assert await ledger.balance(GUILD) == 98
    assert await ledger.verify()


async def test_failed_delivery_refunds(ledger: CreditLedger) -> None:
    generator = ScriptedGenerator()
    queue = make_queue(generator, ledger)
    job, delivery = await submit(queue, delivery=RecordingDelivery(fail_delivery=True))
    await settle(job)
    assert delivery.failures and delivery.failures[0][1] == 1
    assert await ledger.balance(GUILD) == 100


async def test_shutdown_lets_running_jobs_finish(ledger: CreditLedger) -> None:
    generator = ScriptedGenerator(gated=True)
    queue = make_queue(generator, ledger)
    _, delivery = await submit(queue)
    await generator.wait_calls(1)
    stopping = asyncio.create_task(queue.shutdown(grace=5))
    await asyncio.sleep(0)
    with pytest.raises(ShuttingDown):
        await submit(queue, user=BOB)
    generator.release(1)
    await asyncio.wait_for(stopping, 5)
    assert delivery.results and delivery.results[0].committed == 1
    assert await ledger.balance(GUILD) == 99
    assert await ledger.verify()


async def test_shutdown_refunds_what_cannot_finish(ledger: CreditLedger) -> None:
    generator = ScriptedGenerator(gated=True)
    queue = make_queue(generator, ledger, concurrent=1)
    running, running_delivery = await submit(queue, user=ALICE, samples=2)
    waiting, waiting_delivery = await submit(queue, user=BOB)
    await generator.wait_calls(1)
    await asyncio.wait_for(queue.shutdown(grace=0.05), 5)
    assert running_delivery.failures and waiting_delivery.failures
    assert "restarted" in waiting_delivery.failures[0][0]
    assert running_delivery.failures[0][1] == 2
    assert await ledger.balance(GUILD) == 100
    assert await ledger.active_jobs() == []
    assert await ledger.verify()
    assert running.settled.is_set() and waiting.settled.is_set()


async def test_a_cancelled_reservation_is_refunded(ledger: CreditLedger) -> None:
    generator = ScriptedGenerator()
    queue = make_queue(generator, ledger)
    await ledger.ensure_guild(GUILD)
    attempt = asyncio.create_task(submit(queue))
    await asyncio.sleep(0)  # the reservation is on its way to the database
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    statement = Insight(ledger._storage)  # the entries /credits history shows
    for _ in range(100):  # the write finishes, then the refund follows it
        if await statement.count_history(GUILD) == 3:
            break
        await asyncio.sleep(0.01)
    # grant, reserve, refund: the reservation did happen, and was undone
    assert [e.kind for e in await statement.history(GUILD)] == ["refund", "reserve", "grant"]
    assert await ledger.balance(GUILD) == 100
    assert await ledger.active_jobs() == []
    assert await ledger.verify()
    assert queue.user_load(GUILD, ALICE) == 0
    assert generator.calls == []


def hold_marks(ledger: CreditLedger, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Every queued -> running write waits until the returned event is set."""
    marked = asyncio.Event()
    real_mark = ledger.mark_running

    async def slow_mark(job_id: int) -> JobRecord:
        await marked.wait()
        return await real_mark(job_id)

    monkeypatch.setattr(ledger, "mark_running", slow_mark)
    return marked


async def test_first_call_runs_while_the_job_is_marked_running(
    ledger: CreditLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The queued -> running write is not on the critical path: the API call starts
    # while it is still under way, and the image is kept once it has succeeded.
    marked = hold_marks(ledger, monkeypatch)
    generator = ScriptedGenerator(gated=True)
    queue = make_queue(generator, ledger)
    job, delivery = await submit(queue)
    await generator.wait_calls(1)  # would time out if the call waited for the mark
    generator.release()
    await asyncio.sleep(0.05)
    assert not job.settled.is_set()  # the image is not kept before the mark's verdict
    marked.set()
    await settle(job)
    stored = await ledger.get_job(job.id)
    assert stored is not None and stored.status.value == "succeeded"
    assert len(delivery.delivered) == 1


async def test_an_image_of_a_job_settled_elsewhere_is_dropped(ledger: CreditLedger) -> None:
    # Another process recovered the job (refunded it) while it waited for a slot:
    # its call still starts, but the mark is refused and the image is dropped.
    generator = ScriptedGenerator(gated=True)
    queue = make_queue(generator, ledger, concurrent=1)
    first, _ = await submit(queue, user=BOB, prompt="first")
    job, delivery = await submit(queue)
    await generator.wait_calls(1)
    await ledger.refund(job.id, "recovered by another process")
    generator.release(2)
    await settle(first)
    await settle(job)
    assert delivery.delivered == []
    assert delivery.failures and "restarted" in delivery.failures[0][0]
    assert delivery.failures[0][1] == 0  # already refunded: nothing more to give back
    assert await ledger.balance(GUILD) == 99  # BOB's image only
    assert await ledger.verify()


async def test_a_failed_call_of_a_job_settled_elsewhere_refunds_nothing_twice(
    ledger: CreditLedger,
) -> None:
    generator = ScriptedGenerator(gated=True)
    generator.failures["doomed"] = SegmindUnauthorized(status=401, detail="bad key")
    queue = make_queue(generator, ledger, concurrent=1)
    first, _ = await submit(queue, user=BOB, prompt="first")
    job, delivery = await submit(queue, prompt="doomed")
    await generator.wait_calls(1)
    await ledger.refund(job.id, "recovered by another process")
    generator.release(2)
    await settle(first)
    await settle(job)
    assert delivery.failures
    assert await ledger.balance(GUILD) == 99
    assert await ledger.verify()


@dataclass
class SlowToFinish(RecordingDelivery):
    """Posts at once, then holds the status update that follows the post."""

    posted: asyncio.Event = field(default_factory=asyncio.Event)
    go_on: asyncio.Event = field(default_factory=asyncio.Event)

    async def finished(self, job: Job, result: CommitResult) -> None:
        self.posted.set()
        await self.go_on.wait()
        await super().finished(job, result)


async def test_a_posted_result_frees_the_members_slot_at_once(ledger: CreditLedger) -> None:
    queue = make_queue(ScriptedGenerator(), ledger, per_user=1)
    first, delivery = await submit(queue, delivery=SlowToFinish())
    assert isinstance(delivery, SlowToFinish)
    await asyncio.wait_for(delivery.posted.wait(), 5)
    assert not first.settled.is_set()  # the queue is still finishing the first job
    # The member sees their image and asks again: accepted, not "already 1 in progress".
    second, _ = await submit(queue, prompt="again")
    delivery.go_on.set()
    await settle(first)
    await settle(second)
    assert await ledger.balance(GUILD) == 98
    assert queue.user_load(GUILD, ALICE) == 0
    assert await ledger.verify()


async def test_a_429_holds_the_whole_queue_and_fails_nobody(ledger: CreditLedger) -> None:
    generator = ScriptedGenerator(gated=True)
    queue = make_queue(generator, ledger, concurrent=2)
    limited, limited_delivery = await submit(queue, user=ALICE, prompt="limited")
    other, other_delivery = await submit(queue, user=BOB, prompt="other")
    waiting, _ = await submit(queue, user=CAROL, prompt="waiting")
    await generator.wait_calls(2)
    generator.failures["limited"] = SegmindRateLimited(status=429, retry_after=0.2)
    generator.release(1)  # "limited" is answered 429
    await asyncio.sleep(0.05)
    # No new call starts while the API's wait runs, though a slot is free, and the
    # refused image is first again for its member.
    assert len(generator.calls) == 2
    assert queue.backlog.pace.held_for() > 0
    assert queue.backlog.images == 2
    del generator.failures["limited"]
    generator.release(10)
    for job in (limited, other, waiting):
        await settle(job)
    assert limited_delivery.failures == [] and len(limited_delivery.delivered) == 1
    assert len(other_delivery.delivered) == 1
    assert [prompt for prompt, _ in generator.calls].count("limited") == 2
    assert await ledger.balance(GUILD) == 97
    assert await ledger.verify()


async def test_over_the_waiting_cap_nothing_is_reserved(ledger: CreditLedger) -> None:
    generator = ScriptedGenerator(gated=True)
    queue = JobQueue(generator, ledger, max_concurrent=1, max_per_user=5, max_waiting_images=3)
    first, _ = await submit(queue, user=ALICE)
    await generator.wait_calls(1)
    second, _ = await submit(queue, user=BOB, samples=3)  # 3 images wait: the cap
    balance = await ledger.balance(GUILD)
    with pytest.raises(QueueBusy) as caught:
        await submit(queue, user=CAROL)
    assert "3 images waiting" in caught.value.user_message
    assert "Nothing was charged" in caught.value.user_message
    assert await ledger.balance(GUILD) == balance
    assert queue.user_load(GUILD, CAROL) == 0
    generator.release(10)
    await settle(first)
    await settle(second)
    third, _ = await submit(queue, user=CAROL)  # room again
    generator.release(1)
    await settle(third)


async def test_the_automatic_cap_follows_the_measured_rate(ledger: CreditLedger) -> None:
    generator = ScriptedGenerator()
    queue = make_queue(generator, ledger, concurrent=4)
    assert queue.backlog.max_waiting_images == queue.backlog.pace.automatic_cap()
    queue.backlog.pace.observe(0.1)  # 4 slots / 0.1 s: 40 images a second
    assert queue.backlog.max_waiting_images == 40 * 12 * 60


async def test_with_an_rpm_calls_start_spaced(ledger: CreditLedger) -> None:
    generator = ScriptedGenerator()
    queue = JobQueue(generator, ledger, max_concurrent=8, max_per_user=5, rpm=600)
    jobs = [(await submit(queue, user=user))[0] for user in (ALICE, BOB, CAROL)]
    # One start now; the others wait for the pace (one timer), not for a free slot.
    assert len(generator.calls) <= 1 and queue.in_flight <= 1
    assert queue.backlog.pace.delay() > 0
    for job in jobs:
        await settle(job)
    assert len(generator.calls) == 3


async def test_the_delivery_is_given_the_final_balance_and_the_queue_records_the_message(
    ledger: CreditLedger,
) -> None:
    # A 4-image job of which one fails: the result shows the balance after the refund,
    # and the result message id the delivery reports is stored by the queue (for /gallery).
    generator = ScriptedGenerator()
    generator.failures["a cat:3"] = SegmindOutOfCredits(status=406, api_message="no credits")
    queue = make_queue(generator, ledger)
    delivery = RecordingDelivery(message_id=424_242_424_242_424_242)
    request = Txt2ImgRequest(prompt="a cat", samples=4, seed=1)
    job = await queue.enqueue(
        guild_id=GUILD, channel_id=5, user_id=ALICE, request=request, delivery=delivery
    )
    await settle(job)
    assert len(delivery.delivered) == 3
    assert delivery.balances == [100 - 3] == [delivery.results[0].balance]
    stored = await ledger.get_job(job.id)
    assert stored is not None and stored.message_id == 424_242_424_242_424_242
