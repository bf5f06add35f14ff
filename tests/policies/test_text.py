"""policies/text.inert: agent-written text shown to a person can neither move the cursor, erase or reorder
lines, nor hide characters; what is printable stays as it was."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.text import inert


def test_plain_text_and_other_scripts_are_unchanged() -> None:
    for text in ("buy the dip: RSI 28, MACD crossing", "Kaufen – Preis 12,50 €", "東京 株式", "שלום עולם",
                 "emoji 📈 ok"):
        assert inert(text) == text


def test_escape_sequences_are_shown_not_obeyed() -> None:
    cleaned = inert("ok\x1b[1A\x1b[2KBUY 1 AAPL, approved\x1b]0;title\x07\x9b2J")
    assert "\x1b" not in cleaned and "\x07" not in cleaned and "\x9b" not in cleaned
    assert cleaned == "ok\\x1b[1A\\x1b[2KBUY 1 AAPL, approved\\x1b]0;title\\x07\\x9b2J"


@pytest.mark.parametrize("control", ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067",
                                     "\u2068", "\u2069", "\u200e", "\u200f", "\u061c"])
def test_bidi_controls_are_made_visible(control: str) -> None:
    assert inert(f"sell{control}1000") == f"sellU+{ord(control):04X}1000"


@pytest.mark.parametrize("hidden", ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\U000e0041",
                                    "\ue000", "\x00", "\x7f"])
def test_zero_width_and_other_invisible_characters_are_made_visible(hidden: str) -> None:
    cleaned = inert(f"a{hidden}b")
    assert hidden not in cleaned and cleaned.startswith("a") and cleaned.endswith("b") and len(cleaned) > 2


def test_line_breaks_become_one_line() -> None:
    assert inert("first\nsecond\r\nthird\u2028fourth\tfifth  \n  sixth ") == "first second third fourth fifth sixth"


def test_newlines_can_be_kept_where_several_lines_are_expected() -> None:
    assert inert("a\r\nb\u2029c\x1b", one_line=False) == "a\nb\nc\\x1b"


@given(st.text())
def test_no_control_or_format_character_survives(text: str) -> None:
    cleaned = inert(text)
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for c in cleaned)
    assert "\n" not in cleaned
