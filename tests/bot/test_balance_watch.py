"""The watch on the bot's Segmind balance: when the owners must hear about it (pure)."""

from __future__ import annotations

import pytest

from bot.balance_watch import BalanceNotice, BalanceState, BalanceWatch


def notices(watch: BalanceWatch, balances: list[float]) -> list[str | None]:
    return [None if (n := watch.observe(b)) is None else n.kind for b in balances]


def test_told_once_when_low_and_once_when_refilled() -> None:
    watch = BalanceWatch(1.0)
    assert notices(watch, [5.0, 1.0, 0.99, 0.5, 0.0, 0.7]) == [
        None,
        None,
        "low",
        None,
        None,
        None,
    ]
    assert watch.state is BalanceState.LOW
    assert notices(watch, [0.9, 20.0, 19.5, 0.8, 0.7, 1.0]) == [
        None,
        "refilled",
        None,
        "low",
        None,
        "refilled",
    ]


def test_a_start_below_the_threshold_is_news_but_a_stored_low_is_not() -> None:
    assert notices(BalanceWatch(2.0), [1.5, 1.4]) == ["low", None]
    assert notices(BalanceWatch(2.0, BalanceState.LOW), [1.5, 3.0]) == [None, "refilled"]
    assert notices(BalanceWatch(2.0, BalanceState.OK), [2.5, 1.0]) == [None, "low"]


def test_zero_turns_the_watch_off() -> None:
    watch = BalanceWatch(0)
    assert notices(watch, [0.0, 10.0, 0.0]) == [None, None, None]
    assert watch.state is BalanceState.UNKNOWN


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("low", "running low: $0.42 left (alert below $1.00)"),
        ("refilled", "topped up: $1,250.00 left"),
    ],
)
def test_notice_text(kind: str, expected: str) -> None:
    balance = 0.42 if kind == "low" else 1250.0
    notice = BalanceNotice(kind, balance, 1.0)  # type: ignore[arg-type]
    assert expected in notice.text
    assert "Segmind account" in notice.text
