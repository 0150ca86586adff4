"""The order aggregate: its events, how they fold into state, and the commands' rules."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import eventstore

registry = eventstore.EventRegistry()


@registry.register
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    customer: str


@registry.register
@dataclass(frozen=True)
class ItemAdded:
    sku: str
    quantity: int
    price_cents: int


@registry.register
@dataclass(frozen=True)
class OrderCancelled:
    reason: str


class OrderError(Exception):
    """A command the order's rules refuse (HTTP 422)."""


@dataclass(frozen=True)
class Order:
    customer: str | None = None
    status: str = "new"
    total_cents: int = 0


def evolve(order: Order, event: Any) -> Order:
    if isinstance(event, OrderPlaced):
        return replace(order, customer=event.customer, status="open")
    if isinstance(event, ItemAdded):
        return replace(order, total_cents=order.total_cents + event.quantity * event.price_cents)
    if isinstance(event, OrderCancelled):
        return replace(order, status="cancelled")
    return order


def place(order: Order, order_id: str, customer: str) -> list[Any]:
    if order.status != "new":
        raise OrderError(f"order {order_id} exists")
    return [OrderPlaced(order_id, customer)]


def add_item(order: Order, sku: str, quantity: int, price_cents: int) -> list[Any]:
    if order.status != "open":
        raise OrderError(f"items can be added to an open order only, not a {order.status} one")
    if quantity < 1 or price_cents < 0:
        raise OrderError(f"bad item {sku}: quantity {quantity}, price {price_cents}")
    return [ItemAdded(sku, quantity, price_cents)]


def cancel(order: Order, reason: str) -> list[Any]:
    if order.status != "open":
        raise OrderError(f"only an open order can be cancelled, not a {order.status} one")
    return [OrderCancelled(reason)]
