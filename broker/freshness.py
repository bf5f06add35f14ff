"""What a broker adapter learned recently, kept for reuse while it is fresh (assets for a minute, quotes for
half a second), so that a proposal's look-ups serve its execution instead of being asked for again.

A kept value is returned as it was fetched (a quote keeps its own `as_of`: the gate's stale-quote check judges
its real age). Freshness is judged on both clocks: the monotonic one (a wall-clock step back cannot stretch
the window) and the wall clock the gate judges quotes by (so a test that moves time on sees values expire).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _wall_now() -> datetime:
    return datetime.now(UTC)


class FreshCache(Generic[K, V]):
    """Values by key, each reused for at most `max_age` seconds after it was fetched; at most `max_entries`
    (the oldest go first). Thread-safe: adapters may be called from several event loops and worker threads."""

    def __init__(self, max_age: float, *, max_entries: int = 10_000,
                 monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], datetime] = _wall_now):
        if max_age < 0:
            raise ValueError("max_age must be >= 0")
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self.max_age = float(max_age)
        self.max_entries = max_entries
        self._monotonic = monotonic
        self._wall = wall
        self._kept: OrderedDict[K, tuple[V, float, datetime]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value fetched for `key` at most max_age seconds ago (by both clocks), else None."""
        with self._lock:
            kept = self._kept.get(key)
            if kept is None:
                return None
            value, fetched_mono, fetched_wall = kept
            mono_age = self._monotonic() - fetched_mono
            wall_age = (self._wall() - fetched_wall).total_seconds()
            if 0 <= mono_age <= self.max_age and 0 <= wall_age <= self.max_age:
                return value
            del self._kept[key]
            return None

    def age(self, key: K) -> float | None:
        """Seconds since the value kept for `key` was fetched (the older reading of the two clocks), or None
        when nothing fresh is kept."""
        with self._lock:
            kept = self._kept.get(key)
            if kept is None:
                return None
            _, fetched_mono, fetched_wall = kept
            mono_age = self._monotonic() - fetched_mono
            wall_age = (self._wall() - fetched_wall).total_seconds()
        if 0 <= mono_age <= self.max_age and 0 <= wall_age <= self.max_age:
            return max(mono_age, wall_age)
        return None

    def stamp(self) -> tuple[float, datetime]:
        """Now, by both clocks: taken when a request is sent, so a value's age counts its round trip too."""
        return self._monotonic(), self._wall()

    def put(self, key: K, value: V, fetched: tuple[float, datetime] | None = None) -> None:
        """Keep `value`, fetched at `fetched` (a stamp() taken before the request; default now)."""
        if self.max_age == 0:
            return
        fetched_mono, fetched_wall = fetched if fetched is not None else self.stamp()
        with self._lock:
            self._kept.pop(key, None)
            self._kept[key] = (value, fetched_mono, fetched_wall)
            while len(self._kept) > self.max_entries:
                self._kept.popitem(last=False)

    def forget(self, key: K) -> None:
        with self._lock:
            self._kept.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()
