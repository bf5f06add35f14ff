"""US equity market hours from the NYSE calendar (exchange_calendars "XNYS"): holidays and early closes.

The calendar (and pandas under it) is imported lazily, once, on the first lookup; the session table
(open/close of every session over a span of years, as epoch seconds) is built once per process and
extended only if a lookup falls outside it. After that a lookup is a binary search: about a microsecond.

Only the regular session counts as open (09:30-16:00 New York, 13:00 on early-close days). Crypto
trades around the clock and never asks. Times must be timezone-aware; naive times are refused.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from broker.base import MarketClock

NEW_YORK = ZoneInfo("America/New_York")
CALENDAR_NAME = "XNYS"
# The first table covers [now.year - YEARS_BEFORE, now.year + YEARS_AFTER]: the fewest years that hold `now`
# strictly inside (_table_for), since a server's first market-hours lookup (its first get_trading_status, or
# first order) builds it on the call's path, at ~1.5 ms a year. A lookup outside extends it (once a year).
YEARS_BEFORE = 1
YEARS_AFTER = 1


@dataclass(frozen=True)
class _Sessions:
    """The sessions of first_year..last_year: opens[i] and closes[i] are the i-th session's."""

    first_year: int
    last_year: int
    opens: tuple[float, ...]  # epoch seconds, ascending
    closes: tuple[float, ...]


_sessions: _Sessions | None = None
_lock = threading.Lock()


def _build(first_year: int, last_year: int) -> _Sessions:
    return _shipped_sessions(first_year, last_year) or _calendar_sessions(first_year, last_year)


def _calendar_sessions(first_year: int, last_year: int) -> _Sessions:
    import exchange_calendars  # heavy (pandas, ~0.4 s of CPU): only when the shipped sessions do not do

    calendar = exchange_calendars.get_calendar(CALENDAR_NAME, start=f"{first_year}-01-01",
                                               end=f"{last_year}-12-31")
    schedule = calendar.schedule
    opens = tuple(ts.timestamp() for ts in schedule["open"])
    closes = tuple(ts.timestamp() for ts in schedule["close"])
    return _Sessions(first_year, last_year, opens, closes)


def _shipped_sessions(first_year: int, last_year: int) -> _Sessions | None:
    """The sessions of the years asked from policies/nyse_sessions.py (exchange_calendars' own, written out),
    when it covers them and the installed exchange_calendars is the version they were taken from; else None. A
    server's first lookup (get_trading_status, the first order) then costs milliseconds instead of importing
    pandas."""
    from policies import nyse_sessions as shipped

    if not shipped.FIRST_YEAR <= first_year <= last_year <= shipped.LAST_YEAR:
        return None
    if not _calendar_installed_at(shipped.EXCHANGE_CALENDARS_VERSION):
        return None
    holidays = {date.fromisoformat(day) for day in shipped.HOLIDAYS.split()}
    special: dict[date, tuple[time, time]] = {}
    for line in shipped.SPECIAL_HOURS.strip().splitlines():
        session, session_open, session_close = line.split()
        special[date.fromisoformat(session)] = (time.fromisoformat(session_open), time.fromisoformat(session_close))
    regular = (time.fromisoformat(shipped.REGULAR_OPEN), time.fromisoformat(shipped.REGULAR_CLOSE))
    opens: list[float] = []
    closes: list[float] = []
    # Epoch seconds by arithmetic, not a zone-aware datetime per open and close (~1.5 ms more on a server's first
    # lookup): a session's local times are the day's midnight plus their hours, less the day's UTC offset. New
    # York changes its clocks at 2 a.m., never between a session's open and close, so the offset at noon is
    # theirs (tests/policies/test_market_hours.py holds every shipped year to exchange_calendars' own sessions).
    unix_epoch = date(1970, 1, 1).toordinal()
    for ordinal in range(date(first_year, 1, 1).toordinal(), date(last_year, 12, 31).toordinal() + 1):
        day = date.fromordinal(ordinal)
        if day.weekday() >= 5 or day in holidays:
            continue
        opening, closing = special.get(day, regular)
        offset = NEW_YORK.utcoffset(datetime(day.year, day.month, day.day, 12))
        assert offset is not None  # a ZoneInfo always has one
        midnight = (ordinal - unix_epoch) * 86400 - offset.total_seconds()
        opens.append(midnight + opening.hour * 3600 + opening.minute * 60 + opening.second)
        closes.append(midnight + closing.hour * 3600 + closing.minute * 60 + closing.second)
    return _Sessions(first_year, last_year, tuple(opens), tuple(closes))


def _calendar_installed_at(version: str) -> bool:
    """Whether the exchange_calendars Python would import is `version`: the installer's record of it beside the
    package (exchange_calendars-<version>.dist-info), found without importing the package or reading every
    installed distribution's metadata (importlib.metadata: ~0.5 ms on a server's first lookup)."""
    import importlib.util
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("exchange_calendars")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    package = Path(next(iter(spec.submodule_search_locations)))
    return (package.parent / f"exchange_calendars-{version}.dist-info").is_dir()


def shipped_sessions_source(first_year: int, last_year: int) -> str:
    """The text of policies/nyse_sessions.py for these years, from the installed exchange_calendars: its
    weekdays without a session, and its sessions with other hours than the regular ones."""
    from importlib import metadata

    import exchange_calendars

    schedule = exchange_calendars.get_calendar(CALENDAR_NAME, start=f"{first_year}-01-01",
                                               end=f"{last_year}-12-31").schedule
    hours: dict[date, tuple[str, str]] = {}
    for opening, closing in zip(schedule["open"], schedule["close"], strict=True):
        local_open, local_close = opening.tz_convert(NEW_YORK), closing.tz_convert(NEW_YORK)
        hours[local_open.date()] = (local_open.strftime("%H:%M"), local_close.strftime("%H:%M"))
    holidays: list[str] = []
    day = date(first_year, 1, 1)
    while day.year <= last_year:
        if day.weekday() < 5 and day not in hours:
            holidays.append(day.isoformat())
        day += timedelta(days=1)
    regular = ("09:30", "16:00")
    special = [f"{day.isoformat()} {opening} {closing}" for day, (opening, closing) in sorted(hours.items())
               if (opening, closing) != regular]
    holiday_lines = "\n".join(" ".join(holidays[i:i + 8]) for i in range(0, len(holidays), 8))
    version = metadata.version("exchange_calendars")
    return (f'''"""NYSE sessions {first_year}-{last_year} as exchange_calendars {version} computes them (calendar XNYS),
written out: a server's first market-hours lookup reads these instead of importing exchange_calendars and
pandas (~0.4 s of CPU, which was most of the time to a server's first answer).

Used only while the installed exchange_calendars is that version (policies/market_hours.py); the test
tests/policies/test_market_hours.py checks this file is exactly what it computes. Generated by
policies.market_hours.shipped_sessions_source({first_year}, {last_year}): after upgrading exchange_calendars,
write its text over this file.
"""

EXCHANGE_CALENDARS_VERSION = "{version}"
FIRST_YEAR = {first_year}
LAST_YEAR = {last_year}
REGULAR_OPEN = "{regular[0]}"  # New York time
REGULAR_CLOSE = "{regular[1]}"

# Weekdays without a session.
HOLIDAYS = """
{holiday_lines}
"""

# Sessions with other hours than the regular ones: date, open, close (New York time).
SPECIAL_HOURS = """
{chr(10).join(special)}
"""
''')


def _table_for(year: int) -> _Sessions:
    global _sessions
    table = _sessions
    if table is not None and table.first_year < year < table.last_year:
        return table  # strictly inside: the sessions just before and after `now` are in the table too
    with _lock:
        table = _sessions
        if table is None:
            table = _build(year - YEARS_BEFORE, year + YEARS_AFTER)
        elif not table.first_year < year < table.last_year:
            table = _build(min(table.first_year, year - YEARS_BEFORE),
                           max(table.last_year, year + YEARS_AFTER))
        _sessions = table
        return table


def _epoch(now: datetime) -> float:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("naive datetime: market hours need a timezone-aware time")
    return now.timestamp()


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def is_market_open(now: datetime) -> bool:
    """True while the NYSE regular session is open at `now` (open inclusive, close exclusive)."""
    t = _epoch(now)
    table = _table_for(now.astimezone(UTC).year)
    i = bisect_right(table.opens, t) - 1
    return i >= 0 and t < table.closes[i]


def market_open_or_none(now: datetime) -> bool | None:
    """is_market_open, or None when it cannot be known (calendar unavailable); the checks fail closed
    on None."""
    try:
        return is_market_open(now)
    except Exception:
        return None


def next_open_or_none(now: datetime) -> datetime | None:
    """next_open, or None when the calendar cannot tell."""
    try:
        return next_open(now)
    except Exception:
        return None


def calendar_clock(now: datetime) -> MarketClock:
    """The US equity market clock at `now` from the calendar, in Alpaca's clock semantics."""
    return MarketClock(is_open=is_market_open(now), next_open=next_open(now), next_close=next_close(now))


def next_open(now: datetime) -> datetime:
    """The next session open strictly after `now` (while open, that is the next session's open)."""
    t = _epoch(now)
    table = _table_for(now.astimezone(UTC).year)
    i = bisect_right(table.opens, t)
    if i >= len(table.opens):  # only past the table's last year, which _table_for prevents
        raise LookupError("no session after this time in the calendar")
    return _utc(table.opens[i])


def next_close(now: datetime) -> datetime:
    """The close of the session in progress, or of the next session when the market is closed."""
    t = _epoch(now)
    table = _table_for(now.astimezone(UTC).year)
    i = bisect_right(table.opens, t) - 1
    if i >= 0 and t < table.closes[i]:
        return _utc(table.closes[i])
    if i + 1 >= len(table.closes):
        raise LookupError("no session after this time in the calendar")
    return _utc(table.closes[i + 1])


def new_york_date(now: datetime) -> date:
    """The calendar date in New York at `now` (the ledger's trading day)."""
    _epoch(now)
    return now.astimezone(NEW_YORK).date()


def new_york_day_start(now: datetime) -> datetime:
    """Midnight in New York at the start of `now`'s New York date, in UTC: where "today" begins."""
    day = new_york_date(now)
    return datetime.combine(day, time(0), NEW_YORK).astimezone(UTC)

