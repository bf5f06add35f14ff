"""broker/freshness.py: values reused for at most their window, judged on both clocks, bounded in count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.freshness import FreshCache

START = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)


class Clocks:
    """A monotonic and a wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = START

    def advance(self, seconds: float, *, wall: float | None = None) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds if wall is None else wall)

    def cache(self, max_age: float, **options: int) -> FreshCache[str, str]:
        return FreshCache(max_age, monotonic=lambda: self.mono, wall=lambda: self.wall, **options)


def test_a_value_is_reused_up_to_its_window_and_not_after() -> None:
    clocks = Clocks()
    cache = clocks.cache(0.5)
    cache.put("AAPL", "quote")
    clocks.advance(0.5)
    assert cache.get("AAPL") == "quote"
    clocks.advance(0.01)
    assert cache.get("AAPL") is None


def test_the_window_counts_from_when_the_value_was_asked_for() -> None:
    clocks = Clocks()
    cache = clocks.cache(0.5)
    asked = cache.stamp()
    clocks.advance(0.4)  # the round trip
    cache.put("AAPL", "quote", asked)
    clocks.advance(0.2)
    assert cache.get("AAPL") is None


def test_a_wall_clock_moved_on_expires_a_value() -> None:
    clocks = Clocks()
    cache = clocks.cache(0.5)
    cache.put("AAPL", "quote")
    clocks.advance(0.0, wall=5.0)
    assert cache.get("AAPL") is None


def test_a_wall_clock_stepped_back_does_not_stretch_the_window() -> None:
    clocks = Clocks()
    cache = clocks.cache(0.5)
    cache.put("AAPL", "quote")
    clocks.advance(0.6, wall=-10.0)
    assert cache.get("AAPL") is None


def test_a_zero_window_keeps_nothing() -> None:
    clocks = Clocks()
    cache = clocks.cache(0)
    cache.put("AAPL", "quote")
    assert cache.get("AAPL") is None


def test_the_oldest_entries_go_first_past_the_bound() -> None:
    clocks = Clocks()
    cache = clocks.cache(60, max_entries=2)
    for symbol in ("AAPL", "MSFT", "SPY"):
        cache.put(symbol, symbol.lower())
    assert [cache.get(s) for s in ("AAPL", "MSFT", "SPY")] == [None, "msft", "spy"]


def test_a_forgotten_value_is_gone() -> None:
    clocks = Clocks()
    cache = clocks.cache(60)
    cache.put("AAPL", "quote")
    cache.forget("AAPL")
    assert cache.get("AAPL") is None


def test_a_negative_window_is_refused() -> None:
    with pytest.raises(ValueError, match="max_age"):
        FreshCache(-1)


def test_age_is_the_older_reading_of_the_two_clocks_and_none_once_expired() -> None:
    clocks = Clocks()
    cache = clocks.cache(0.5)
    assert cache.age("AAPL") is None
    cache.put("AAPL", "quote")
    clocks.advance(0.2, wall=0.3)
    assert cache.age("AAPL") == pytest.approx(0.3)
    clocks.advance(0.3)
    assert cache.age("AAPL") is None  # the wall clock says 0.6 s: no longer fresh
