"""The runtime's housekeeping: what a long-running server does once it has started."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterator

import pytest

from server import runtime
from tests.conftest import make_config


async def _frozen_after_start(db_url: str, *, reconcile: bool) -> int:
    gc.unfreeze()
    try:
        async with runtime.open_runtime(make_config(db_url), reconcile=reconcile):
            await asyncio.sleep(0.3)
            return gc.get_freeze_count()
    finally:
        gc.unfreeze()


async def test_a_server_freezes_its_start_up_heap_once_started(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "HEAP_FREEZE_DELAY", 0.05)
    assert await _frozen_after_start(db_url, reconcile=True) > 0


async def test_a_one_shot_command_leaves_the_heap_alone(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "HEAP_FREEZE_DELAY", 0.05)
    assert await _frozen_after_start(db_url, reconcile=False) == 0


@pytest.fixture
def default_switch_interval() -> Iterator[float]:
    """CPython's default GIL switch interval for the test, whatever earlier tests set it to; restored after."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    try:
        yield 0.005
    finally:
        sys.setswitchinterval(before)


async def test_a_server_hands_the_gil_on_every_half_millisecond(db_url: str, default_switch_interval: float) -> None:
    """A worker thread serialising a large answer then holds the event loop (every other agent's call) for
    half a millisecond at a time, not CPython's 5 ms (bench/noisy_neighbour.py measures the effect)."""
    async with runtime.open_runtime(make_config(db_url), reconcile=True):
        assert sys.getswitchinterval() <= 0.0005


async def test_a_one_shot_command_leaves_the_switch_interval_alone(db_url: str, default_switch_interval: float
                                                                   ) -> None:
    async with runtime.open_runtime(make_config(db_url), reconcile=False):
        assert sys.getswitchinterval() == default_switch_interval


async def test_a_restart_finds_the_ledger_prepared_without_a_write_unit(database_url: str) -> None:
    """prepare_database and the simulated broker's start read what a restart finds in place (the singleton rows,
    the configured agents as the file says, the broker's account) instead of writing it again."""
    from ledger.db import UnitCounter

    config = make_config(database_url)
    async with runtime.open_runtime(config, reconcile=False):
        pass  # the first start writes them
    before = UnitCounter.begun
    async with runtime.open_runtime(config, reconcile=False) as restarted:
        assert UnitCounter.begun == before
        assert (await restarted.broker.get_account()).cash > 0
