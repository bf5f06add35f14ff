"""Each mapped attribute's event dispatch bound before mapper configuration first asks for it.

Configuring the mappers (once a process, at its first ORM use: a proposal's answer, an ORM read or write) gives
every column attribute its implementation, which reads the attribute's `dispatch`. SQLAlchemy binds that on the
first read, behind `hasattr(attribute, "_slots_dispatch")`; on an InstrumentedAttribute whose slot is still empty
the miss is costly: the attribute's `__getattr__` falls through to its comparator, which builds the column's
ORM-annotated clause element, then two chained AttributeErrors with formatted messages are raised and dropped.
For the ledger's 188 columns that was ~3.5 of configuration's ~6 ms of CPU, paid before a fresh server's first
proposal could answer. Reading the empty slot directly costs next to nothing, and the dispatch placed there is the
one SQLAlchemy would place on that first read (the class-level dispatch's `_for_instance`), so listeners on an
attribute behave exactly as before (tests/ledger/test_mapped_attributes.py).
"""

from __future__ import annotations

from types import MemberDescriptorType
from typing import Any

from sqlalchemy.orm import registry as Registry
from sqlalchemy.orm.attributes import QueryableAttribute

# The slot SQLAlchemy keeps an attribute's bound dispatch in. A release that keeps it elsewhere leaves this None and
# bind_attribute_dispatch binds nothing: SQLAlchemy's own (slower) first read then binds it, as it always did.
_DISPATCH_SLOT: Any = vars(QueryableAttribute).get("_slots_dispatch")
if not isinstance(_DISPATCH_SLOT, MemberDescriptorType):
    _DISPATCH_SLOT = None


def bind_attribute_dispatch(registry: Registry) -> int:
    """Bind the dispatch of every attribute of `registry`'s mappers not configured yet whose dispatch nothing has
    read; returns how many it bound (0 once they are, or with a SQLAlchemy that keeps the dispatch elsewhere)."""
    if _DISPATCH_SLOT is None:
        return 0
    bound = 0
    for mapper in registry.mappers:
        if mapper.configured:
            continue
        for attribute in mapper.class_manager.values():
            if not isinstance(attribute, QueryableAttribute):
                continue
            try:
                _DISPATCH_SLOT.__get__(attribute, type(attribute))
            except AttributeError:  # the empty slot: what SQLAlchemy's first read would fill, filled the same way
                class_dispatch: Any = type(attribute).dispatch  # the class's: slots_dispatcher.__get__(None, cls)
                _DISPATCH_SLOT.__set__(attribute, class_dispatch._for_instance(attribute))
                bound += 1
    return bound
