"""broker/sim_market.py: deterministic prices, quotes, bars, assets and NYSE sessions."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from broker import sim_market
from broker.base import TIMEFRAMES

NEW_YORK = ZoneInfo("America/New_York")
# Wednesday 2025-03-12 10:00 New York (EDT): a regular trading session is in progress.
NOW = datetime(2025, 3, 12, 14, 0, 17, 123456, tzinfo=UTC)
MINUTE = sim_market.minute_index(NOW)


def test_same_seed_gives_same_prices() -> None:
    for symbol in ("AAPL", "SPY", "BTC/USD"):
        assert [sim_market.minute_price(7, symbol, MINUTE + i) for i in range(50)] == \
               [sim_market.minute_price(7, symbol, MINUTE + i) for i in range(50)]


def test_different_seeds_give_different_prices() -> None:
    first = [sim_market.minute_price(1, "AAPL", MINUTE + i) for i in range(50)]
    second = [sim_market.minute_price(2, "AAPL", MINUTE + i) for i in range(50)]
    assert first != second


def test_symbols_have_their_own_paths() -> None:
    aapl = sim_market.minute_prices(1, "AAPL", MINUTE, MINUTE + 20)
    msft = sim_market.minute_prices(1, "MSFT", MINUTE, MINUTE + 20)
    assert [round(p / aapl[0], 6) for p in aapl] != [round(p / msft[0], 6) for p in msft]


def test_prices_are_cents_near_the_base_price() -> None:
    for symbol, listing in sim_market.UNIVERSE.items():
        price = sim_market.minute_price(42, symbol, MINUTE)
        assert price == price.quantize(Decimal("0.01"))
        assert Decimal(listing.base_price) / 4 < price < Decimal(listing.base_price) * 4


def test_minute_prices_match_minute_price() -> None:
    batch = sim_market.minute_prices(42, "TSLA", MINUTE - 300, MINUTE + 300)
    assert batch == [sim_market.minute_price(42, "TSLA", m) for m in range(MINUTE - 300, MINUTE + 301)]


def test_prices_move_from_minute_to_minute() -> None:
    prices = sim_market.minute_prices(42, "NVDA", MINUTE, MINUTE + 120)
    assert len(set(prices)) > 30


def test_quote_brackets_last_price_with_a_narrow_spread() -> None:
    for symbol in sim_market.SYMBOLS:
        quote = sim_market.quote(42, symbol, NOW)
        assert quote.symbol == symbol
        assert quote.bid < quote.ask
        assert quote.bid <= quote.last <= quote.ask
        assert quote.last == sim_market.minute_price(42, symbol, MINUTE)
        assert (quote.ask - quote.bid) / quote.mid < Decimal("0.003")


def test_quote_is_as_of_now_in_utc() -> None:
    quote = sim_market.quote(42, "AAPL", NOW.astimezone(NEW_YORK))
    assert quote.as_of == NOW.replace(microsecond=0)
    assert quote.as_of.tzinfo == UTC


def test_unknown_symbol_raises_key_error() -> None:
    with pytest.raises(KeyError):
        sim_market.quote(42, "NOPE", NOW)


def test_quote_is_fast() -> None:
    # A loose sanity bound (the design target is well under 50 µs per quote), not a benchmark.
    started = time.perf_counter()
    for i in range(1000):
        sim_market.quote(42, "AAPL", NOW + timedelta(minutes=i))
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
def test_bars_are_consistent_for_every_timeframe(timeframe: str) -> None:
    bars = sim_market.bars(42, "AAPL", timeframe, 40, NOW)  # type: ignore[arg-type]
    assert len(bars) == 40
    for bar in bars:
        assert bar.start.tzinfo is not None
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.vwap is not None and bar.low <= bar.vwap <= bar.high
        assert bar.volume > 0 or bar.high == bar.low  # no trades while the NYSE is closed
    for earlier, later in pairwise(bars):
        assert earlier.start < later.start
        assert later.open == earlier.close  # the simulated tape is continuous
    assert bars[-1].start <= NOW
    assert bars[-1].close == sim_market.quote(42, "AAPL", NOW).last


@pytest.mark.parametrize(("timeframe", "step"), [("1Min", 60), ("5Min", 300), ("15Min", 900), ("1Hour", 3600)])
def test_intraday_bars_are_evenly_spaced(timeframe: str, step: int) -> None:
    bars = sim_market.bars(42, "SPY", timeframe, 10, NOW)  # type: ignore[arg-type]
    assert {int((b.start - a.start).total_seconds()) for a, b in pairwise(bars)} == {step}
    assert int(bars[-1].start.timestamp()) % step == 0


def test_daily_bars_start_at_new_york_midnight() -> None:
    bars = sim_market.bars(42, "SPY", "1Day", 10, NOW)
    local_starts = [bar.start.astimezone(NEW_YORK) for bar in bars]
    assert all((t.hour, t.minute) == (0, 0) for t in local_starts)
    assert [t.date() for t in local_starts] == [date(2025, 3, 3) + timedelta(days=i) for i in range(10)]


def test_one_minute_bars_agree_with_minute_prices() -> None:
    bars = sim_market.bars(42, "KO", "1Min", 5, NOW)
    assert [bar.close for bar in bars] == sim_market.minute_prices(42, "KO", MINUTE - 4, MINUTE)


def test_five_minute_bar_spans_its_one_minute_bars() -> None:
    now = datetime(2025, 3, 12, 14, 4, 59, tzinfo=UTC)  # the end of a complete 5-minute bar
    five = sim_market.bars(42, "AMD", "5Min", 1, now)[0]
    ones = sim_market.bars(42, "AMD", "1Min", 5, now)
    assert five.open == ones[0].open and five.close == ones[-1].close
    assert five.high == max(b.high for b in ones) and five.low == min(b.low for b in ones)
    assert five.volume == pytest.approx(sum(b.volume for b in ones), abs=5)


def test_bars_are_deterministic() -> None:
    assert sim_market.bars(3, "ETH/USD", "1Hour", 24, NOW) == sim_market.bars(3, "ETH/USD", "1Hour", 24, NOW)


def test_a_finished_bar_is_the_same_computed_or_remembered() -> None:
    sim_market._finished_bar.cache_clear()
    first = sim_market.bars(42, "AAPL", "1Day", 20, NOW)
    later = sim_market.bars(42, "AAPL", "1Day", 20, NOW + timedelta(minutes=1))  # 19 finished bars reused
    assert sim_market._finished_bar.cache_info().hits == 19
    assert later[:-1] == first[:-1]
    computed = [sim_market._bar(42, sim_market.listing("AAPL"), first_minute, last_minute, 30)  # type: ignore[arg-type]
                for first_minute, last_minute in sim_market._bar_windows("1Day", 20, NOW)]
    assert first == computed


def test_the_bar_in_progress_follows_the_clock() -> None:
    now_bar = sim_market.bars(42, "AAPL", "1Hour", 1, NOW)[0]
    later_bar = sim_market.bars(42, "AAPL", "1Hour", 1, NOW + timedelta(minutes=20))[0]
    assert now_bar.start == later_bar.start and now_bar != later_bar


def test_zero_bars_requested_gives_none() -> None:
    assert sim_market.bars(42, "AAPL", "1Day", 0, NOW) == []


def test_crypto_asset_is_fractionable_and_not_shortable() -> None:
    asset = sim_market.asset("BTC/USD")
    assert asset is not None
    assert (asset.asset_class, asset.tradable, asset.fractionable, asset.shortable) == ("crypto", True, True, False)


def test_equity_asset_is_tradable_and_shortable() -> None:
    asset = sim_market.asset("aapl")
    assert asset is not None
    assert (asset.symbol, asset.asset_class, asset.tradable, asset.shortable) == ("AAPL", "us_equity", True, True)


def test_halted_asset_is_known_but_not_tradable() -> None:
    asset = sim_market.asset("HALTD")
    assert asset is not None and asset.tradable is False


def test_unknown_asset_is_none() -> None:
    assert sim_market.asset("ZZZZ") is None


def test_universe_is_broad() -> None:
    equities = [s for s, listing in sim_market.UNIVERSE.items() if listing.asset_class == "us_equity"]
    assert len(equities) >= 25
    assert {"AAPL", "MSFT", "SPY", "QQQ", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "AMD", "IWM", "DIA",
            "JPM", "XOM", "KO", "BTC/USD", "ETH/USD", "SOL/USD", "HALTD"} <= set(sim_market.UNIVERSE)


def test_market_is_open_during_a_weekday_session() -> None:
    clock = sim_market.market_clock(NOW)
    assert clock.is_open
    assert clock.next_close == datetime(2025, 3, 12, 20, 0, tzinfo=UTC)
    assert clock.next_open == datetime(2025, 3, 13, 13, 30, tzinfo=UTC)


def test_market_is_closed_on_saturday_until_monday() -> None:
    clock = sim_market.market_clock(datetime(2025, 3, 15, 15, 0, tzinfo=UTC))
    assert not clock.is_open
    assert clock.next_open == datetime(2025, 3, 17, 13, 30, tzinfo=UTC)
    assert clock.next_close == datetime(2025, 3, 17, 20, 0, tzinfo=UTC)


def test_market_closes_at_four_new_york_time() -> None:
    assert sim_market.market_clock(datetime(2025, 3, 12, 19, 59, 59, tzinfo=UTC)).is_open
    assert not sim_market.market_clock(datetime(2025, 3, 12, 20, 0, tzinfo=UTC)).is_open


def test_market_is_closed_on_holidays() -> None:
    assert not sim_market.is_trading_day(date(2025, 12, 25))  # Christmas
    assert not sim_market.is_trading_day(date(2025, 4, 18))  # Good Friday
    assert not sim_market.is_trading_day(date(2026, 7, 3))  # July 4th falls on a Saturday
    assert not sim_market.is_trading_day(date(2025, 11, 27))  # Thanksgiving
    assert sim_market.is_trading_day(date(2025, 11, 28))


def test_day_order_placed_after_the_close_is_for_the_next_session() -> None:
    friday_evening = datetime(2025, 3, 14, 22, 0, tzinfo=UTC)
    assert sim_market.session_close_after(friday_evening) == datetime(2025, 3, 17, 20, 0, tzinfo=UTC)
    assert sim_market.session_close_after(NOW) == datetime(2025, 3, 12, 20, 0, tzinfo=UTC)


def test_an_equity_stands_still_on_a_sunday_while_crypto_trades() -> None:
    saturday_evening, sunday = datetime(2026, 11, 28, 22, 0, tzinfo=UTC), datetime(2026, 11, 29, 18, 0, tzinfo=UTC)
    assert sim_market.quote(42, "AAPL", saturday_evening).last == sim_market.quote(42, "AAPL", sunday).last
    friday_close = datetime(2026, 11, 27, 18, 0, tzinfo=UTC) - timedelta(minutes=1)  # Black Friday: closes 13:00
    assert sim_market.quote(42, "AAPL", sunday).last in {
        sim_market.minute_price(42, "AAPL", sim_market.minute_index(friday_close)),
        sim_market.quote(42, "AAPL", datetime(2026, 11, 27, 21, 0, tzinfo=UTC)).last}
    assert sim_market.quote(42, "BTC/USD", saturday_evening).last != sim_market.quote(42, "BTC/USD", sunday).last
    sunday_bars = sim_market.bars(42, "AAPL", "1Hour", 10, sunday)
    assert all(bar.volume == 0 and bar.high == bar.low for bar in sunday_bars)


def test_an_equity_moves_again_at_the_open() -> None:
    monday = datetime(2026, 11, 30, 14, 30, tzinfo=UTC)  # 09:30 New York
    prices = {sim_market.quote(42, "AAPL", monday + timedelta(minutes=m)).last for m in range(30)}
    assert len(prices) > 1
