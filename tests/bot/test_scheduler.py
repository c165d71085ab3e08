"""The fair scheduler on its own: guilds in turn, then members in turn, O(1) per step."""

from __future__ import annotations

from bot.scheduler import FairScheduler

G1, G2, G3 = 1, 2, 3
ALICE, BOB, CAROL = 10, 20, 30


def drain(scheduler: FairScheduler[str]) -> list[str]:
    order: list[str] = []
    while (entry := scheduler.pop()) is not None:
        order.append(entry)
    return order


def test_empty_scheduler_has_nothing_to_start() -> None:
    scheduler: FairScheduler[str] = FairScheduler()
    assert scheduler.pop() is None
    assert len(scheduler) == 0


def test_a_members_entries_keep_their_order() -> None:
    scheduler: FairScheduler[str] = FairScheduler()
    for entry in ("a1", "a2", "a3"):
        scheduler.push(G1, ALICE, entry)
    assert len(scheduler) == 3
    assert drain(scheduler) == ["a1", "a2", "a3"]
    assert len(scheduler) == 0


def test_guilds_take_turns() -> None:
    scheduler: FairScheduler[str] = FairScheduler()
    for n in range(3):
        scheduler.push(G1, ALICE, f"g1-{n}")
    for n in range(3):
        scheduler.push(G2, BOB, f"g2-{n}")
    assert drain(scheduler) == ["g1-0", "g2-0", "g1-1", "g2-1", "g1-2", "g2-2"]


def test_members_take_turns_inside_a_guild() -> None:
    scheduler: FairScheduler[str] = FairScheduler()
    for n in range(4):
        scheduler.push(G1, ALICE, f"alice-{n}")
    scheduler.push(G1, BOB, "bob")
    scheduler.push(G1, CAROL, "carol")
    assert drain(scheduler) == ["alice-0", "bob", "carol", "alice-1", "alice-2", "alice-3"]


def test_a_newcomer_goes_ahead_of_lanes_already_served() -> None:
    scheduler: FairScheduler[str] = FairScheduler()
    for n in range(12):
        scheduler.push(G1, ALICE, f"flood-{n}")
    assert scheduler.pop() == "flood-0"
    scheduler.push(G1, BOB, "other")
    # BOB was never served, ALICE was: BOB's single entry is next.
    assert scheduler.pop() == "other"
    assert drain(scheduler) == [f"flood-{n}" for n in range(1, 12)]


def test_a_guild_that_arrives_later_is_served_before_one_served_already() -> None:
    scheduler: FairScheduler[str] = FairScheduler()
    scheduler.push(G1, ALICE, "g1-0")
    scheduler.push(G1, ALICE, "g1-1")
    scheduler.push(G2, BOB, "g2-0")
    assert scheduler.pop() == "g1-0"
    scheduler.push(G3, CAROL, "g3-0")
    # Never-served guilds first, by arrival (G2, then G3), then G1 again.
    assert drain(scheduler) == ["g2-0", "g3-0", "g1-1"]


def test_an_emptied_lane_comes_back_as_a_newcomer() -> None:
    scheduler: FairScheduler[str] = FairScheduler()
    scheduler.push(G1, ALICE, "a1")
    scheduler.push(G2, BOB, "b1")
    scheduler.push(G2, BOB, "b2")
    assert scheduler.pop() == "a1"  # G1's lane is now empty and gone
    assert scheduler.pop() == "b1"
    scheduler.push(G1, ALICE, "a2")
    assert drain(scheduler) == ["a2", "b2"]


def test_push_front_puts_an_entry_first_in_its_lane() -> None:
    scheduler: FairScheduler[str] = FairScheduler()
    scheduler.push(G1, ALICE, "a1")
    scheduler.push(G1, ALICE, "a2")
    scheduler.push(G2, BOB, "b1")
    taken = scheduler.pop()
    assert taken == "a1"
    scheduler.push_front(G1, ALICE, taken)
    assert len(scheduler) == 3
    assert drain(scheduler) == ["b1", "a1", "a2"]


def test_push_front_into_an_emptied_lane() -> None:
    scheduler: FairScheduler[str] = FairScheduler()
    scheduler.push(G1, ALICE, "a1")
    taken = scheduler.pop()
    assert taken == "a1" and len(scheduler) == 0
    scheduler.push_front(G1, ALICE, taken)
    assert drain(scheduler) == ["a1"]


def test_clear_forgets_everything() -> None:
    scheduler: FairScheduler[str] = FairScheduler()
    scheduler.push(G1, ALICE, "a1")
    scheduler.push(G2, BOB, "b1")
    scheduler.clear()
    assert len(scheduler) == 0 and scheduler.pop() is None
    scheduler.push(G2, BOB, "b2")
    assert drain(scheduler) == ["b2"]
