"""Mapped attributes get their event dispatch before mapper configuration reads it (ledger/mapped_attributes.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import String, event
from sqlalchemy.orm import DeclarativeBase, Mapped, configure_mappers, mapped_column
from sqlalchemy.orm.attributes import QueryableAttribute

from ledger.mapped_attributes import bind_attribute_dispatch

ROOT = Path(__file__).resolve().parents[2]


def _slot(attribute: Any) -> Any:
    """The attribute's bound dispatch read from its slot (AttributeError while empty), not through the attribute."""
    return vars(QueryableAttribute)["_slots_dispatch"].__get__(attribute)


def _fresh_models() -> tuple[type[Any], type[Any]]:
    """A registry of its own, not configured yet, with two mapped classes (three column attributes)."""

    class Base(DeclarativeBase):
        pass

    class Note(Base):
        __tablename__ = "notes"
        id: Mapped[int] = mapped_column(primary_key=True)
        text: Mapped[str] = mapped_column(String(20))

    class Tag(Base):
        __tablename__ = "tags"
        name: Mapped[str] = mapped_column(String(20), primary_key=True)

    return Base, Note


def test_every_attribute_of_the_mappers_not_configured_yet_is_bound_once() -> None:
    base, _ = _fresh_models()
    assert bind_attribute_dispatch(base.registry) == 3
    assert bind_attribute_dispatch(base.registry) == 0  # already bound


def test_configuration_uses_the_dispatch_bound_before_it() -> None:
    base, note = _fresh_models()
    bind_attribute_dispatch(base.registry)
    bound = _slot(note.text)
    configure_mappers()
    assert note.text.dispatch is bound
    assert note.text.impl.dispatch is bound


def test_a_listener_on_an_attribute_still_hears_its_changes() -> None:
    base, note = _fresh_models()
    bind_attribute_dispatch(base.registry)
    heard: list[str] = []
    event.listen(note.text, "set", lambda _target, value, _old, _initiator: heard.append(value))
    configure_mappers()
    row = note(id=1, text="first")
    row.text = "second"
    assert heard == ["first", "second"]


def test_mappers_configured_already_are_left_alone() -> None:
    base, _ = _fresh_models()
    configure_mappers()
    assert bind_attribute_dispatch(base.registry) == 0


def test_the_ledgers_column_attributes_are_bound_when_their_configuration_begins() -> None:
    # In a fresh process (in this one the models may be configured already); a listener added after the models'
    # own hears the same event after it.
    program = """
from sqlalchemy import event
from sqlalchemy.orm import configure_mappers
from sqlalchemy.orm.attributes import QueryableAttribute
from ledger.models import Base

SLOT = vars(QueryableAttribute)["_slots_dispatch"]

def bound(attribute):
    try:
        SLOT.__get__(attribute)
    except AttributeError:
        return False
    return True

def count_bound(registry):
    attributes = [mapper.class_manager[prop.key] for mapper in registry.mappers for prop in mapper.column_attrs]
    print(len(attributes), sum(bound(attribute) for attribute in attributes))

event.listen(Base.registry, "before_configured", count_bound)
configure_mappers()
"""
    ran = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.split() == ["188", "188"]
