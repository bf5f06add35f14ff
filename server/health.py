"""GET /healthz: is this replica able to serve? (no token needed; nothing secret in the answer)

200 when the database answers and the broker answers; 503 otherwise (or while the server is starting).
A halt is reported but is not ill health: a halted server still serves reads and cancels, so a load
balancer must keep routing to it. The broker is asked at most every BROKER_CHECK_SECONDS (a load balancer
probing every second must not spend the broker's API quota).

    {"status": "ok", "server": "tradewarden", "trading_mode": "paper",
     "database": {"ok": true, "latency_ms": 0.8},
     "broker": {"ok": true, "name": "simulated", "checked_at": "...", "latency_ms": 2.1},
     "trading": {"halted": false, "state": "active", "reason": null}}
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text

from ledger.models import GLOBAL_SCOPE, TradingState
from server.runtime import Runtime

DATABASE_TIMEOUT = 2.0
BROKER_TIMEOUT = 3.0
BROKER_CHECK_SECONDS = 10.0
BROKER_RECHECK_FAILED_SECONDS = 2.0


@dataclass
class _BrokerCheck:
    at: float
    result: dict[str, Any]


class HealthCheck:
    def __init__(self) -> None:
        self._broker: _BrokerCheck | None = None
        self._lock = asyncio.Lock()

    async def report(self, runtime: Runtime | None) -> tuple[int, dict[str, Any]]:
        if runtime is None:
            return 503, {"status": "starting"}
        database, trading = await self._database(runtime)
        broker = await self._broker_status(runtime)
        healthy = database["ok"] and broker["ok"]
        return (200 if healthy else 503), {
            "status": "ok" if healthy else "unavailable", "server": runtime.config.server.server_name,
            "trading_mode": runtime.config.server.trading_mode, "database": database, "broker": broker,
            "trading": trading}

    async def _database(self, runtime: Runtime) -> tuple[dict[str, Any], dict[str, Any]]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT), runtime.sessions() as session:
                await session.execute(text("SELECT 1"))
                row = (await session.execute(select(TradingState).where(TradingState.scope == GLOBAL_SCOPE))
                       ).scalar_one_or_none()
        except Exception as error:  # any failure is "unreachable"; only the error's type is shown
            return ({"ok": False, "error": type(error).__name__},
                    {"halted": None, "state": "unknown", "reason": None})
        state = row.state if row else "active"
        return ({"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)},
                {"halted": state == "halted", "state": state, "reason": row.reason if row else None})

    async def _broker_status(self, runtime: Runtime) -> dict[str, Any]:
        async with self._lock:  # one probe at a time; the others read its result
            cached = self._broker
            if cached is not None and time.monotonic() - cached.at < (
                    BROKER_CHECK_SECONDS if cached.result["ok"] else BROKER_RECHECK_FAILED_SECONDS):
                return cached.result
            name = getattr(runtime.broker, "name", type(runtime.broker).__name__)
            started = time.perf_counter()
            try:
                await asyncio.wait_for(runtime.broker.get_account(), BROKER_TIMEOUT)
                result: dict[str, Any] = {"ok": True, "name": name,
                                          "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
            except Exception as error:
                result = {"ok": False, "name": name, "error": type(error).__name__}
            result["checked_at"] = datetime.now(UTC).isoformat()
            self._broker = _BrokerCheck(at=time.monotonic(), result=result)
            return result
