"""US equity market hours from the NYSE calendar: sessions, weekends, holidays, early closes."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from policies import market_hours
from policies.market_hours import (
    is_market_open,
    market_open_or_none,
    new_york_date,
    new_york_day_start,
    next_close,
    next_open,
)

NY = ZoneInfo("America/New_York")


def ny(*args: int) -> datetime:
    return datetime(*args, tzinfo=NY)  # type: ignore[misc]


def test_open_at_the_opening_bell() -> None:
    assert is_market_open(ny(2026, 11, 23, 9, 30))


def test_closed_one_second_before_the_opening_bell() -> None:
    assert not is_market_open(ny(2026, 11, 23, 9, 29, 59))


def test_open_one_second_before_the_close() -> None:
    assert is_market_open(ny(2026, 11, 23, 15, 59, 59))


def test_closed_at_the_closing_bell() -> None:
    assert not is_market_open(ny(2026, 11, 23, 16, 0))


def test_pre_market_and_after_hours_count_as_closed() -> None:
    assert not is_market_open(ny(2026, 11, 23, 8, 0))
    assert not is_market_open(ny(2026, 11, 23, 17, 30))


def test_closed_on_weekends() -> None:
    assert not is_market_open(ny(2026, 11, 21, 12, 0))  # Saturday
    assert not is_market_open(ny(2026, 11, 22, 12, 0))  # Sunday


def test_closed_on_christmas_day() -> None:
    assert not is_market_open(ny(2026, 12, 25, 12, 0))


def test_closed_on_thanksgiving() -> None:
    assert not is_market_open(ny(2026, 11, 26, 12, 0))


def test_the_day_after_thanksgiving_closes_early_at_one_pm() -> None:
    assert is_market_open(ny(2026, 11, 27, 12, 59, 59))
    assert not is_market_open(ny(2026, 11, 27, 13, 0))


def test_the_session_follows_new_york_time_across_daylight_saving() -> None:
    assert is_market_open(datetime(2026, 7, 1, 13, 30, tzinfo=UTC))  # 09:30 EDT
    assert not is_market_open(datetime(2026, 12, 1, 14, 29, tzinfo=UTC))  # 09:29 EST


def test_any_timezone_gives_the_same_answer() -> None:
    moment = ny(2026, 11, 23, 10, 0)
    assert is_market_open(moment) == is_market_open(moment.astimezone(UTC)) is True


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        is_market_open(datetime(2026, 11, 23, 15, 0))


def test_years_beyond_the_first_table_are_looked_up_too() -> None:
    assert not is_market_open(ny(2035, 12, 25, 12, 0))
    assert is_market_open(ny(2035, 12, 26, 12, 0))
    assert is_market_open(ny(2026, 11, 23, 12, 0))  # the earlier years are kept


def test_next_open_after_friday_close_is_monday_morning() -> None:
    assert next_open(ny(2026, 11, 20, 16, 30)) == ny(2026, 11, 23, 9, 30)


def test_next_open_skips_a_holiday() -> None:
    assert next_open(ny(2026, 12, 24, 17, 0)) == ny(2026, 12, 28, 9, 30)


def test_next_open_while_open_is_the_next_sessions_open() -> None:
    assert next_open(ny(2026, 11, 23, 10, 0)) == ny(2026, 11, 24, 9, 30)


def test_next_close_while_open_is_todays_close() -> None:
    assert next_close(ny(2026, 11, 23, 10, 0)) == ny(2026, 11, 23, 16, 0)


def test_next_close_on_an_early_close_day_is_one_pm() -> None:
    assert next_close(ny(2026, 11, 27, 8, 0)) == ny(2026, 11, 27, 13, 0)


def test_next_open_and_close_are_in_utc() -> None:
    assert next_open(ny(2026, 11, 20, 16, 30)).tzinfo == UTC


def test_a_lookup_costs_microseconds_once_the_table_is_built() -> None:
    moment = ny(2026, 11, 23, 10, 0)
    is_market_open(moment)
    start = time.perf_counter()
    for _ in range(10_000):
        is_market_open(moment)
    per_call = (time.perf_counter() - start) / 10_000
    assert per_call < 50e-6, f"{per_call * 1e6:.1f} µs per lookup"


def test_an_unavailable_calendar_gives_none_so_the_checks_fail_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(first_year: int, last_year: int) -> None:
        raise RuntimeError("no calendar")

    monkeypatch.setattr(market_hours, "_sessions", None)
    monkeypatch.setattr(market_hours, "_build", broken)
    assert market_open_or_none(ny(2026, 11, 23, 10, 0)) is None


def test_the_first_lookup_builds_only_the_years_around_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """It is on a server's first call: the year before, its own and the next, no more."""
    monkeypatch.setattr(market_hours, "_sessions", None)
    assert is_market_open(ny(2026, 11, 23, 10, 0))
    table = market_hours._sessions
    assert table is not None and (table.first_year, table.last_year) == (2025, 2027)


def test_a_lookup_outside_the_table_extends_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(market_hours, "_sessions", None)
    assert is_market_open(ny(2026, 11, 23, 10, 0))
    assert next_open(ny(2027, 12, 31, 17, 0)) == ny(2028, 1, 3, 9, 30)  # past the first table's last year
    assert not is_market_open(ny(2025, 1, 1, 10, 0))  # New Year's Day, in the first table's first year
    table = market_hours._sessions
    assert table is not None and (table.first_year, table.last_year) == (2024, 2028)


def test_the_new_york_day_starts_at_local_midnight() -> None:
    assert new_york_day_start(datetime(2026, 11, 23, 15, 30, tzinfo=UTC)) == datetime(2026, 11, 23, 5, tzinfo=UTC)
    assert new_york_day_start(datetime(2026, 7, 1, 15, 30, tzinfo=UTC)) == datetime(2026, 7, 1, 4, tzinfo=UTC)


def test_late_evening_in_new_york_is_still_the_same_new_york_day() -> None:
    late = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)  # 22:00 on the 23rd in New York
    assert new_york_date(late).isoformat() == "2026-11-23"
    assert new_york_day_start(late) == datetime(2026, 11, 23, 5, tzinfo=UTC)


def test_the_shipped_sessions_file_is_what_the_installed_exchange_calendars_computes() -> None:
    from pathlib import Path

    from policies import nyse_sessions

    shipped = Path(nyse_sessions.__file__).read_text()
    assert shipped == market_hours.shipped_sessions_source(nyse_sessions.FIRST_YEAR, nyse_sessions.LAST_YEAR), \
        "regenerate policies/nyse_sessions.py (its docstring says how)"


def test_the_shipped_sessions_are_the_calendars_sessions_to_the_second() -> None:
    from policies import nyse_sessions

    first, last = nyse_sessions.FIRST_YEAR, nyse_sessions.LAST_YEAR
    shipped = market_hours._shipped_sessions(first, last)
    assert shipped is not None
    assert shipped == market_hours._calendar_sessions(first, last)
    assert market_hours._shipped_sessions(2024, 2029) == market_hours._calendar_sessions(2024, 2029)


def test_the_shipped_sessions_are_not_used_with_another_exchange_calendars_version(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from policies import nyse_sessions

    monkeypatch.setattr(nyse_sessions, "EXCHANGE_CALENDARS_VERSION", "0.0.1")
    assert market_hours._shipped_sessions(2024, 2028) is None


def test_the_installed_calendar_version_is_what_importlib_metadata_says() -> None:
    from importlib import metadata

    installed = metadata.version("exchange_calendars")
    assert market_hours._calendar_installed_at(installed)
    assert not market_hours._calendar_installed_at(installed + ".1")
    assert not market_hours._calendar_installed_at("0.0.1")


def test_the_shipped_sessions_are_not_used_for_years_they_do_not_cover() -> None:
    from policies import nyse_sessions

    assert market_hours._shipped_sessions(2024, nyse_sessions.LAST_YEAR + 1) is None
    assert market_hours._shipped_sessions(nyse_sessions.FIRST_YEAR - 1, 2024) is None


def test_a_lookup_within_the_shipped_years_does_not_import_pandas() -> None:
    import subprocess
    import sys

    probe = ("import sys; from datetime import datetime, UTC; from policies.market_hours import calendar_clock; "
             "calendar_clock(datetime(2026, 11, 23, 15, 0, tzinfo=UTC)); "
             "print(sorted(m for m in ('exchange_calendars', 'pandas', 'numpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
