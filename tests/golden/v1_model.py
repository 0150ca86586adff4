"""Version 1 of an account's events and snapshot state: the classes that wrote
the golden files beside this module (see write_golden.py), and that a separate
process appends with in the cross-process tests.

tests/test_evolving_events.py reads everything written with these classes
through changed ones: a field added with a default, fields renamed and removed,
a class renamed, field types changed, a nested object changed, an Enum value
renamed. Never change this module: the golden files are its output.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from eventstore import EventRegistry

registry = EventRegistry()

STREAM = "account-1"
SNAPSHOT_VERSION = 6
"""The stream version the snapshot state is saved at."""


@registry.register
class Status(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


@registry.register
@dataclass(frozen=True)
class Line:
    sku: str
    qty: int


@registry.register
@dataclass(frozen=True)
class AccountOpened:
    owner: str


@registry.register
@dataclass(frozen=True)
class Deposited:
    amount: int
    note: str


@registry.register
@dataclass(frozen=True)
class Withdrawn:
    amount: int


@registry.register
@dataclass(frozen=True)
class Tagged:
    code: int


@registry.register
@dataclass(frozen=True)
class StatusChanged:
    status: Status


@registry.register
@dataclass(frozen=True)
class Ordered:
    lines: list[Line]


@registry.register
@dataclass(frozen=True)
class Moved:
    address: str


@registry.register
@dataclass(frozen=True)
class AccountState:
    owner: str
    balance: int
    status: Status
    lines: tuple[Line, ...]


EVENTS: list[Any] = [
    AccountOpened("ann"),
    Deposited(100, "salary"),
    Withdrawn(30),
    Tagged(7),
    StatusChanged(Status.CLOSED),
    Ordered([Line("A-1", 2), Line("B-2", 1)]),
    Moved("1 Main St, Springfield"),
]
"""The stream's events, in order."""

SNAPSHOT_STATE = AccountState("ann", 70, Status.CLOSED, (Line("A-1", 2), Line("B-2", 1)))
"""The state after the first :data:`SNAPSHOT_VERSION` events."""
