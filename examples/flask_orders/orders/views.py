"""The HTTP commands. Each request appends the order's events and updates its row
in ``db.session``'s transaction: ``db.session.commit()`` keeps both, and a
request that fails (an error response or an exception) commits neither, since
Flask-SQLAlchemy rolls the session back at the end of the request."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, request

from eventstore import NO_STREAM, Repository
from orders import domain
from orders.extensions import db, events
from orders.models import OrderRow

blueprint = Blueprint("orders", __name__)


def _repository() -> Repository[domain.Order]:
    # events.store runs every call in db.session's transaction, so a load sees this
    # request's own appends.
    return Repository(events.store, domain.Order(), domain.evolve)


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "a JSON object is expected")
    return body


def _stream(order_id: str) -> str:
    return f"order-{order_id}"


@blueprint.post("/orders")
def place_order() -> tuple[dict[str, Any], int]:
    body = _body()
    order_id, customer = str(body["order_id"]), str(body["customer"])
    orders = _repository()
    order, version = orders.append(
        _stream(order_id),
        domain.place(domain.Order(), order_id, customer),
        state=domain.Order(),
        expected_version=NO_STREAM,  # a second order with this id: ConcurrencyError, 409
    )
    db.session.add(
        OrderRow(
            order_id=order_id,
            customer=customer,
            status=order.status,
            total_cents=order.total_cents,
            version=version,
        )
    )
    db.session.commit()  # the event and the row, together
    return {"order_id": order_id, "version": version}, 201


@blueprint.post("/orders/<order_id>/items")
def add_items(order_id: str) -> dict[str, Any]:
    """Add each item of ``{"items": [...], "expected_version": n}`` as a command of
    its own (load, decide, append), all in one transaction: each load sees the
    items appended before it. ``expected_version`` (optional) is the version the
    client last saw: a stale one is a 409."""
    body = _body()
    orders = _repository()
    row = db.get_or_404(OrderRow, order_id)
    expected = body.get("expected_version")
    for item in body["items"]:
        order, version = orders.load(_stream(order_id))
        order, version = orders.append(
            _stream(order_id),
            domain.add_item(order, str(item["sku"]), int(item["quantity"]), int(item["price"])),
            state=order,
            expected_version=version if expected is None else int(expected),
        )
        expected = None
        row.total_cents, row.version = order.total_cents, version
        db.session.flush()  # the row is written now; a later item's failure undoes it
    db.session.commit()
    return {"order_id": order_id, "version": row.version, "total_cents": row.total_cents}


@blueprint.post("/orders/<order_id>/cancel")
def cancel_order(order_id: str) -> dict[str, Any]:
    body = _body()
    orders = _repository()
    row = db.get_or_404(OrderRow, order_id)
    order, version = orders.load(_stream(order_id))
    order, version = orders.append(
        _stream(order_id),
        domain.cancel(order, str(body.get("reason", ""))),
        state=order,
        expected_version=version,
    )
    row.status, row.version = order.status, version
    db.session.commit()
    return {"order_id": order_id, "version": version, "status": order.status}


@blueprint.get("/orders/<order_id>")
def show_order(order_id: str) -> dict[str, Any]:
    row = db.get_or_404(OrderRow, order_id)
    return {
        "order_id": row.order_id,
        "customer": row.customer,
        "status": row.status,
        "total_cents": row.total_cents,
        "version": row.version,
    }
