"""broker/base.py: the broker protocol's types."""

from __future__ import annotations

import dataclasses

from broker import base


def test_every_dataclass_of_the_protocol_has_a_docstring_of_its_own() -> None:
    # Without one, dataclasses writes one from inspect.signature(cls) when the class is made: ~50 µs a class of
    # CPU at every server start (every server imports these types before its first answer).
    classes = [value for value in vars(base).values() if isinstance(value, type) and dataclasses.is_dataclass(value)]
    assert len(classes) >= 8
    generated = [cls.__name__ for cls in classes if (cls.__doc__ or "").startswith(f"{cls.__name__}(")]
    assert generated == []
