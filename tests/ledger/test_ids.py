"""Audit record ids are version 7 UUIDs (the time first, so a unit's records share their index's last leaf, then
randomness); proposals' and orders' ids, which people read shortened and type by prefix, are random (version 4)."""

from __future__ import annotations

import time
import uuid

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ledger.ids import new_random_id, new_row_id, uuid4_text, uuid7_text


def _reference_uuid7(unix_ms: int, random10: bytes) -> uuid.UUID:
    """RFC 9562's layout, field by field: unix_ts_ms (48), ver (4), rand_a (12), var (2), rand_b (62)."""
    random = int.from_bytes(random10)
    rand_a = (random >> 64) & 0xFFF
    rand_b = random & ((1 << 62) - 1)
    value = (unix_ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


@settings(max_examples=300, deadline=None)
@given(unix_ms=st.integers(min_value=0, max_value=(1 << 48) - 1), random10=st.binary(min_size=10, max_size=10))
@example(unix_ms=0, random10=b"\x00" * 10)
@example(unix_ms=(1 << 48) - 1, random10=b"\xff" * 10)
def test_an_id_is_the_rfc_9562_version_7_uuid_of_its_time_and_random_bits(unix_ms: int, random10: bytes) -> None:
    text = uuid7_text(unix_ms, random10)
    parsed = uuid.UUID(text)
    assert text == str(_reference_uuid7(unix_ms, random10))
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert parsed.int >> 80 == unix_ms


@settings(max_examples=200, deadline=None)
@given(first=st.integers(min_value=0, max_value=(1 << 48) - 2), gap=st.integers(min_value=1, max_value=10**9),
       random_a=st.binary(min_size=10, max_size=10), random_b=st.binary(min_size=10, max_size=10))
def test_an_id_drawn_in_a_later_millisecond_sorts_after_as_text(first: int, gap: int, random_a: bytes,
                                                                 random_b: bytes) -> None:
    later = min(first + gap, (1 << 48) - 1)
    assert uuid7_text(first, random_a) < uuid7_text(later, random_b)


def test_a_fresh_id_carries_the_current_millisecond_and_fresh_randomness() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_row_id() for _ in range(1000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 1000
    assert all(before <= uuid.UUID(i).int >> 80 <= after for i in ids)


@settings(max_examples=300, deadline=None)
@given(random16=st.binary(min_size=16, max_size=16))
@example(random16=b"\xff" * 16)
@example(random16=b"\x00" * 16)
def test_a_random_id_is_the_version_4_uuid_of_its_random_bytes(random16: bytes) -> None:
    assert uuid4_text(random16) == str(uuid.UUID(bytes=random16, version=4))


def test_ids_people_type_by_prefix_differ_in_their_first_8_characters_when_drawn_together() -> None:
    ids = [new_random_id() for _ in range(100)]
    assert all(uuid.UUID(i).version == 4 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    assert len({i[:8] for i in ids}) == 100  # a time-ordered id would share them for about a minute
