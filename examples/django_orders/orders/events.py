"""The order service's events."""

from dataclasses import dataclass

from eventstore import EventRegistry

registry = EventRegistry()


@registry.register
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    customer: str
    total_cents: int


@registry.register
@dataclass(frozen=True)
class OrderPaid:
    order_id: str


@registry.register
@dataclass(frozen=True)
class OrderCancelled:
    order_id: str
    reason: str
