"""The runtime's housekeeping: what a long-running server does once it has started."""

from __future__ import annotations

import asyncio
import gc

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
