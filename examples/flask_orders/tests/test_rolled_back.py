"""The fast style: each test runs inside one transaction that is rolled back at its
end (the plugin's ``eventstore_connection``), so nothing is committed and nothing
needs emptying. Both tests place order "rb-1" (which no committing test uses): the
second to run would get a 409 if the first one's order had stayed."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import Connection, text

from eventstore import EventStore


def test_a_placed_order_is_seen_inside_the_test_transaction(
    rolled_back_client: FlaskClient,
    eventstore_connection: Connection,
    rolled_back_event_store: EventStore,
) -> None:
    response = rolled_back_client.post("/orders", json={"order_id": "rb-1", "customer": "ada"})

    assert response.status_code == 201
    assert [e.event_type for e in rolled_back_event_store.load_events("order-rb-1")] == [
        "OrderPlaced"
    ]
    row = eventstore_connection.execute(text("SELECT status FROM orders WHERE order_id = 'rb-1'"))
    assert row.scalar_one() == "open"


def test_a_conflict_undoes_only_its_own_request(
    rolled_back_client: FlaskClient, eventstore_connection: Connection
) -> None:
    assert (
        rolled_back_client.post("/orders", json={"order_id": "rb-1", "customer": "ada"}).status_code
        == 201
    )

    response = rolled_back_client.post("/orders", json={"order_id": "rb-1", "customer": "bob"})

    assert response.status_code == 409
    customers = eventstore_connection.execute(
        text("SELECT customer FROM orders WHERE order_id = 'rb-1'")
    ).scalars()
    assert list(customers) == ["ada"]
    items = rolled_back_client.post(
        "/orders/rb-1/items", json={"items": [{"sku": "book", "quantity": 1, "price": 100}]}
    )
    assert items.status_code == 200
    assert items.json["version"] == 2  # type: ignore[index]
