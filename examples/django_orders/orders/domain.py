"""The order aggregate: its state, folded from its events, and its commands."""

from __future__ import annotations

from dataclasses import dataclass, replace

from eventstore import EventStore, Repository
from orders.events import OrderCancelled, OrderPaid, OrderPlaced


class OrderRejectedError(Exception):
    """A command the order's current state does not allow."""


@dataclass(frozen=True)
class OrderState:
    customer: str = ""
    total_cents: int = 0
    status: str = "new"


def evolve(state: OrderState, event: object) -> OrderState:
    if isinstance(event, OrderPlaced):
        return OrderState(event.customer, event.total_cents, "placed")
    if isinstance(event, OrderPaid):
        return replace(state, status="paid")
    if isinstance(event, OrderCancelled):
        return replace(state, status="cancelled")
    return state


def repository(store: EventStore) -> Repository[OrderState]:
    return Repository(store, OrderState(), evolve)


def stream(order_id: str) -> str:
    return f"order-{order_id}"


def place(
    store: EventStore, order_id: str, customer: str, total_cents: int
) -> tuple[OrderState, int]:
    orders = repository(store)
    state, version = orders.load(stream(order_id))
    if state.status != "new":
        raise OrderRejectedError(f"order {order_id} exists")
    return orders.append(
        stream(order_id),
        [OrderPlaced(order_id, customer, total_cents)],
        state=state,
        expected_version=version,
    )


def pay(store: EventStore, order_id: str) -> tuple[OrderState, int]:
    orders = repository(store)
    state, version = orders.load(stream(order_id))  # sees an append earlier in the block
    if state.status != "placed":
        raise OrderRejectedError(f"order {order_id} is {state.status}, not placed")
    return orders.append(
        stream(order_id), [OrderPaid(order_id)], state=state, expected_version=version
    )


def cancel(
    store: EventStore, order_id: str, reason: str, expected_version: int
) -> tuple[OrderState, int]:
    """Cancel the order as the client last saw it (``expected_version``): a change
    since then is a ConcurrencyError."""
    orders = repository(store)
    state, _ = orders.load(stream(order_id))
    if state.status not in ("placed", "paid"):
        raise OrderRejectedError(f"order {order_id} is {state.status}")
    return orders.append(
        stream(order_id),
        [OrderCancelled(order_id, reason)],
        state=state,
        expected_version=expected_version,
    )
