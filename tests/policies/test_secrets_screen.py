"""The scrubber's screen (a few substring searches that skip text in which no rendering of a secret can begin)
answers exactly as the plain pattern does: same text out for every secret and every text, ASCII or not."""

from __future__ import annotations

import json
from urllib.parse import quote

from hypothesis import example, given, settings
from hypothesis import strategies as st

from policies import secrets

# Keys as Alpaca issues them, and text from the alphabets their renderings are written in (so matches happen).
ALPACA_KEY = "PKZ3JQ8WX2LM4N7RT5V1"
ALPACA_SECRET = "Zk9s/3hQwP0x+Lm2Vb8nR4tY6uI1oE7aS5dF3gH9"
KEY_ALPHABET = "PKZ3JQ8WXzk9s/+%2Fhqw \n\\'\"abcK\u212a\u017fS\u0130i"

secret_text = st.text(alphabet=st.sampled_from(KEY_ALPHABET), min_size=secrets.MIN_FRAGMENT, max_size=24)
any_text = st.one_of(st.text(max_size=80), st.text(alphabet=st.sampled_from(KEY_ALPHABET), max_size=80))


def plainly_scrubbed(screen: secrets.Screen, text: str) -> str:
    return screen[0].sub(secrets.REDACTED, text)


@settings(max_examples=300, deadline=None)
@given(known=st.sets(secret_text, min_size=1, max_size=3), text=any_text, cut=st.integers(0, 40))
@example(known={ALPACA_KEY, ALPACA_SECRET}, text=f"key {ALPACA_KEY.lower()} and {quote(ALPACA_SECRET, safe='')}",
         cut=0)
@example(known={"kelvin"}, text="KELVIN", cut=0)
@example(known={"\u212aelvin"}, text="kelvin", cut=0)  # a Kelvin sign matches an ASCII k when case is ignored
@example(known={"\u017fecret"}, text="SECRET", cut=0)  # a long s matches an ASCII s
def test_the_screen_masks_exactly_what_the_pattern_masks(known: set[str], text: str, cut: int) -> None:
    screen = secrets.screen_of(known)
    # The text also holds a piece of a secret's JSON rendering, so some examples must be masked.
    secret = sorted(known)[0]
    for candidate in (text, text + json.dumps(secret)[cut:], json.dumps(secret)[:cut] + text):
        assert secrets.scrub_with(screen, candidate) == plainly_scrubbed(screen, candidate)


def test_text_of_a_registered_key_is_masked_through_the_screen() -> None:
    screen = secrets.screen_of({ALPACA_KEY, ALPACA_SECRET})
    assert screen[1] is not None  # ASCII keys: the screen is in use
    assert secrets.scrub_with(screen, f"bad key {ALPACA_KEY.lower()}!") == f"bad key {secrets.REDACTED}!"


def test_a_secret_beginning_outside_ascii_turns_the_screen_off() -> None:
    assert secrets.screen_of({"\u212aelvin-key"})[1] is None
