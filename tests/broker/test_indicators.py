"""broker/indicators.py against values computed by hand on a small fixed series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from broker.base import Bar
from broker.indicators import compute_indicators

CLOSES = [10, 12, 11, 13, 12, 14]
VOLUMES = [100, 200, 100, 300, 100, 200]


def make_bars(closes: list[int], volumes: list[int] | None = None, vwaps: list[str] | None = None) -> list[Bar]:
    start = datetime(2025, 3, 12, 14, 0, tzinfo=UTC)
    volumes = volumes or [100] * len(closes)
    return [Bar(start=start + timedelta(minutes=i), open=Decimal(c), high=Decimal(c) + 1, low=Decimal(c) - 1,
                close=Decimal(c), volume=Decimal(v), vwap=Decimal(vwaps[i]) if vwaps else None)
            for i, (c, v) in enumerate(zip(closes, volumes, strict=True))]


BARS = make_bars(CLOSES, VOLUMES)


def test_sma_is_the_mean_of_the_last_n_closes() -> None:
    # (13 + 12 + 14) / 3 and (10 + 12 + 11 + 13 + 12 + 14) / 6
    assert compute_indicators(BARS, ["sma_3", "sma_6"]) == {"sma_3": Decimal("13.0000"), "sma_6": Decimal("12.0000")}


def test_ema_is_seeded_with_the_sma_then_smoothed() -> None:
    # alpha = 2 / (3 + 1) = 0.5; seed (10 + 12 + 11) / 3 = 11; then 13 -> 12, 12 -> 12, 14 -> 13
    assert compute_indicators(BARS, ["ema_3"]) == {"ema_3": Decimal("13.0000")}


def test_ema_with_a_longer_period() -> None:
    # alpha = 2 / (4 + 1) = 0.4; seed (10 + 12 + 11 + 13) / 4 = 11.5; 12 -> 11.7; 14 -> 11.7 + 0.4 * 2.3 = 12.62
    assert compute_indicators(BARS, ["ema_4"]) == {"ema_4": Decimal("12.6200")}


def test_rsi_uses_wilder_smoothing() -> None:
    # changes +2 -1 +2 -1 +2; seed gain 4/3, loss 1/3; after -1: 8/9, 5/9; after +2: 34/27, 10/27
    # RS = 3.4, RSI = 100 - 100 / 4.4 = 77.2727...
    assert compute_indicators(BARS, ["rsi_3"]) == {"rsi_3": Decimal("77.2727")}


def test_rsi_is_100_without_losses_and_50_without_moves() -> None:
    assert compute_indicators(make_bars([1, 2, 3, 4]), ["rsi_3"]) == {"rsi_3": Decimal("100.0000")}
    assert compute_indicators(make_bars([5, 5, 5, 5]), ["rsi_3"]) == {"rsi_3": Decimal("50.0000")}


def test_vwap_weights_typical_prices_by_volume() -> None:
    # typical price (high + low + close) / 3 == close here: (1000 + 2400 + 1100 + 3900 + 1200 + 2800) / 1000
    assert compute_indicators(BARS, ["vwap"]) == {"vwap": Decimal("12.4000")}


def test_vwap_prefers_each_bars_own_vwap() -> None:
    bars = make_bars([10, 20], [100, 300], vwaps=["10.5", "19.5"])
    # (10.5 * 100 + 19.5 * 300) / 400
    assert compute_indicators(bars, ["vwap"]) == {"vwap": Decimal("17.2500")}


def test_vwap_without_volume_is_none() -> None:
    assert compute_indicators(make_bars([10, 11], [0, 0]), ["vwap"]) == {"vwap": None}


def test_macd_of_a_flat_series_is_zero() -> None:
    values = compute_indicators(make_bars([50] * 40), ["macd", "macd_signal", "macd_hist"])
    assert values == {"macd": Decimal("0.0000"), "macd_signal": Decimal("0.0000"), "macd_hist": Decimal("0.0000")}


def test_macd_needs_26_bars_and_its_signal_34() -> None:
    rising = list(range(1, 41))
    assert compute_indicators(make_bars(rising[:25]), ["macd"]) == {"macd": None}
    assert compute_indicators(make_bars(rising[:26]), ["macd"])["macd"] is not None
    assert compute_indicators(make_bars(rising[:33]), ["macd_signal"]) == {"macd_signal": None}
    assert compute_indicators(make_bars(rising[:34]), ["macd_signal"])["macd_signal"] is not None


def test_macd_is_positive_in_an_uptrend() -> None:
    value = compute_indicators(make_bars(list(range(1, 41))), ["macd"])["macd"]
    assert value is not None and value > 0


def test_too_few_bars_gives_none() -> None:
    assert compute_indicators(BARS, ["sma_7", "ema_7", "rsi_6"]) == {"sma_7": None, "ema_7": None, "rsi_6": None}
    assert compute_indicators([], ["sma_1", "vwap"]) == {"sma_1": None, "vwap": None}


def test_rsi_needs_one_bar_more_than_its_period() -> None:
    # six closes give five changes: gains 2 + 2 + 2 = 6, losses 1 + 1 = 2; RS = 1.2 / 0.4 = 3; RSI = 75
    assert compute_indicators(BARS, ["rsi_5"]) == {"rsi_5": Decimal("75.0000")}


def test_names_are_case_insensitive_and_normalized() -> None:
    assert compute_indicators(BARS, ["SMA_3", " Ema3 ", "VWAP"]) == {
        "sma_3": Decimal("13.0000"), "ema_3": Decimal("13.0000"), "vwap": Decimal("12.4000")}


@pytest.mark.parametrize("name", ["bollinger", "sma", "sma_x", "rsi_1", "sma_0", "ema_5000", ""])
def test_unknown_indicator_raises_value_error_listing_supported_forms(name: str) -> None:
    with pytest.raises(ValueError, match=r"sma_N|between"):
        compute_indicators(BARS, [name])


def test_unknown_name_message_lists_every_supported_form() -> None:
    with pytest.raises(ValueError) as raised:
        compute_indicators(BARS, ["sma_3", "stoch"])
    for form in ("sma_N", "ema_N", "rsi_N", "vwap", "macd"):
        assert form in str(raised.value)
