"""Every way a secret can be written into text, and one scrubber that masks them all.

A key reaches error messages in many renderings, not only raw: an HTTP library refusing a header quotes its
repr (`'PK12\\nAB'`), a JSON body escapes it, a URL percent-encodes it, bytes print as `b'...'`, and a
message cut at its first line holds only the part before a line break. Every scrubber in the process (the
audit log's `redact`, the Alpaca adapter's errors, tool errors shown to agents, log lines, the command
line's one-line reasons) masks what `renderings` lists for every secret the process knows.

Secrets are registered once, where they enter the process (the configuration reading the environment, the
broker built with them): `register`. Registration is process-wide on purpose: a scrubber deep in a library
callback cannot be handed the keys, and a secret must be masked everywhere or it is masked nowhere.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import unicodedata
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"
# A fragment of a secret split by a line break or space shorter than this is not worth masking (it would
# mask common text) and reveals almost nothing.
MIN_FRAGMENT = 4

_lock = threading.Lock()
_known: set[str] = set()
_screen: Screen | None = None  # the registered secrets compiled (screen_of); replaced whole, read once per scrub


def _escapes(text: str) -> set[str]:
    """One level of escaping, each without its quotes."""
    found = {text, repr(text)[1:-1], json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1],
             quote(text, safe=""), quote_plus(text, safe=""), quote(text)}
    for encoding in ("utf-8", "latin-1"):
        with contextlib.suppress(UnicodeEncodeError):
            found.add(repr(text.encode(encoding))[2:-1])
    return found


def renderings(secret: str) -> set[str]:
    """The secret raw, repr-, JSON-, URL- and bytes-escaped, each escaping applied twice (a repr inside a
    JSON body), and every fragment between whitespace or control characters (a message cut at a line)."""
    found: set[str] = set()
    for once in _escapes(secret):
        found |= _escapes(once)
    fragments = re.split(r"[\s\x00-\x1f\x7f]+", secret)
    if len(fragments) > 1:
        for fragment in fragments:
            if len(fragment) >= MIN_FRAGMENT:
                found |= _escapes(fragment)
    return {r for r in found if len(r) >= MIN_FRAGMENT}


# A compiled set of secrets: the pattern masking every rendering, and the first MIN_FRAGMENT characters of every
# rendering lower-cased, when all of those are ASCII (else None). ASCII text holding none of them (after
# str.lower) cannot match the pattern: for ASCII characters on both sides its IGNORECASE is ASCII case-folding,
# and every rendering is at least MIN_FRAGMENT long. A few substring searches in C cost a tenth of the pattern's
# scan of a digest or a timestamp (and most scrubbed text is such text).
Screen = tuple[re.Pattern[str], tuple[str, ...] | None]


def screen_of(known: set[str]) -> Screen:
    """The pattern (and its ASCII anchors) masking every rendering of every secret in `known` (non-empty)."""
    every = set().union(*(renderings(s) for s in known))
    # Longest first, so a rendering is masked whole rather than around a shorter one inside it.
    alternatives = sorted(every, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(a) for a in alternatives), re.IGNORECASE)
    ascii_starts = all(a[:MIN_FRAGMENT].isascii() for a in alternatives)
    return pattern, (tuple(sorted({a[:MIN_FRAGMENT].lower() for a in alternatives})) if ascii_starts else None)


def scrub_with(screen: Screen, text: str) -> str:
    """pattern.sub(REDACTED, text), skipped for plain ASCII text in which no rendering can begin."""
    pattern, anchors = screen
    if anchors is not None and type(text) is str and text.isascii():
        lowered = text.lower()
        for anchor in anchors:
            if anchor in lowered:
                break
        else:
            return text
    return pattern.sub(REDACTED, text)


def register(*secrets: str | None) -> None:
    """Mask these values (in every rendering) in everything scrubbed from now on."""
    global _screen
    new = {s for s in secrets if s and len(s) >= MIN_FRAGMENT} - _known
    if not new:
        return
    with _lock:
        _known.update(new)
        _screen = screen_of(_known)


def scrub(text: str) -> str:
    """The text with every rendering of every registered secret masked. Scrub before cutting a text short:
    a cut through a secret leaves a piece no rendering matches."""
    screen = _screen
    return text if screen is None else scrub_with(screen, text)


def unsafe_character(value: str) -> str | None:
    """What makes a key unusable in an HTTP header, in words (never the character's neighbours): whitespace,
    a control or format character, or anything outside printable ASCII. None when the value is clean."""
    for char in value:
        if char.isspace():
            return "a line break" if char in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029" else "whitespace"
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            return "a control character"
        if not char.isascii():
            return "a non-ASCII character"
    return None
