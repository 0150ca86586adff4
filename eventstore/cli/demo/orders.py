"""The demo's small order-processing domain: its events, an order's state, and how
an event changes it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from eventstore.registry import EventRegistry

__all__ = [
    "DemoStarted",
    "ItemAdded",
    "ItemRemoved",
    "Order",
    "OrderPlaced",
    "OrderShipped",
    "evolve",
    "registry",
    "type_name",
]

registry = EventRegistry()
"""The demo's event classes, registered under ``demo.``-prefixed names so they
never mix with an application's own event types in a shared database."""


@registry.register(name="demo.DemoStarted")
@dataclass(frozen=True)
class DemoStarted:
    """A run of the demo began."""

    started_at: datetime


@registry.register(name="demo.OrderPlaced")
@dataclass(frozen=True)
class OrderPlaced:
    """A customer opened an order."""

    order_id: str
    customer: str


@registry.register(name="demo.ItemAdded")
@dataclass(frozen=True)
class ItemAdded:
    """Some quantity of a product was put in the order."""

    sku: str
    quantity: int
    unit_price: Decimal


@registry.register(name="demo.ItemRemoved")
@dataclass(frozen=True)
class ItemRemoved:
    """A product was taken out of the order again."""

    sku: str


@registry.register(name="demo.OrderShipped")
@dataclass(frozen=True)
class OrderShipped:
    """The order left the warehouse."""

    carrier: str


@registry.register(name="demo.Order")
@dataclass(frozen=True)
class Order:
    """An order's state: what the events add up to (and what a snapshot stores)."""

    order_id: str = ""
    customer: str = ""
    quantities: dict[str, int] = field(default_factory=dict)
    prices: dict[str, Decimal] = field(default_factory=dict)
    status: str = "new"

    @property
    def total(self) -> Decimal:
        """The sum of quantity times unit price over the order's lines."""
        return sum(
            (Decimal(n) * self.prices[sku] for sku, n in self.quantities.items()), Decimal("0")
        )

    def summary(self) -> str:
        """One line: customer, status, lines and total."""
        if len(self.quantities) > 4:
            lines = f"{len(self.quantities)} lines"
        else:
            lines = ", ".join(f"{sku} x{n}" for sku, n in self.quantities.items()) or "no items"
        return f"{self.customer}, {self.status}: {lines}; total {self.total}"


def evolve(order: Order, event: Any) -> Order:
    """Fold one event into an order; returns a new Order (the old one is unchanged)."""
    if isinstance(event, OrderPlaced):
        return dataclasses.replace(
            order, order_id=event.order_id, customer=event.customer, status="open"
        )
    if isinstance(event, ItemAdded):
        quantities = dict(order.quantities)
        quantities[event.sku] = quantities.get(event.sku, 0) + event.quantity
        return dataclasses.replace(
            order, quantities=quantities, prices={**order.prices, event.sku: event.unit_price}
        )
    if isinstance(event, ItemRemoved):
        quantities = {sku: n for sku, n in order.quantities.items() if sku != event.sku}
        prices = {sku: p for sku, p in order.prices.items() if sku != event.sku}
        return dataclasses.replace(order, quantities=quantities, prices=prices)
    if isinstance(event, OrderShipped):
        return dataclasses.replace(order, status=f"shipped by {event.carrier}")
    return order


def type_name(cls: type) -> str:
    """The name ``cls`` is registered under in :data:`registry`."""
    name = registry.name_of(cls)
    assert name is not None
    return name
