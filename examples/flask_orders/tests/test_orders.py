"""Requests against the real database: events and rows commit together or not at all."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from orders.extensions import events
from orders.projection import catch_up


def events_of(database: psycopg.Connection, order_id: str) -> list[tuple[int, str]]:
    return database.execute(
        "SELECT version, event_type FROM events WHERE stream_id = %s ORDER BY version",
        (f"order-{order_id}",),
    ).fetchall()


def row_of(database: psycopg.Connection, order_id: str) -> tuple[Any, ...] | None:
    return database.execute(
        "SELECT customer, status, total_cents, version FROM orders WHERE order_id = %s",
        (order_id,),
    ).fetchone()


def wait_for_feed(app: Flask, count: int) -> None:
    """Until the feed shows ``count`` events: it shows an event once every older
    transaction on the server has ended, and on a shared server other sessions'
    transactions can hold it back for a moment."""
    deadline = time.monotonic() + 30
    with app.app_context():
        while len(events.unbound_store.read_all()) < count:
            assert time.monotonic() < deadline, "the feed did not show the committed events"
            time.sleep(0.05)


def place(client: FlaskClient, order_id: str, customer: str = "ada") -> int:
    response = client.post("/orders", json={"order_id": order_id, "customer": customer})
    assert response.status_code == 201, response.json
    return int(response.json["version"])  # type: ignore[index]


def test_a_placed_order_commits_its_event_and_its_row(
    client: FlaskClient, database: psycopg.Connection
) -> None:
    assert place(client, "1") == 1

    assert events_of(database, "1") == [(1, "OrderPlaced")]
    assert row_of(database, "1") == ("ada", "open", 0, 1)


def test_a_second_order_with_the_same_id_is_a_409_that_writes_nothing(
    client: FlaskClient, database: psycopg.Connection
) -> None:
    place(client, "1")

    response = client.post("/orders", json={"order_id": "1", "customer": "bob"})

    assert response.status_code == 409
    assert "order-1" in response.json["error"]  # type: ignore[index]
    assert events_of(database, "1") == [(1, "OrderPlaced")]
    assert row_of(database, "1") == ("ada", "open", 0, 1)


def test_two_commands_on_one_order_in_one_request_see_each_other(
    client: FlaskClient, database: psycopg.Connection
) -> None:
    place(client, "1")

    # Each item is loaded, decided and appended in turn, in the request's transaction:
    # the second load sees the first append, so it does not conflict with it.
    response = client.post(
        "/orders/1/items",
        json={
            "items": [
                {"sku": "book", "quantity": 2, "price": 1500},
                {"sku": "pen", "quantity": 1, "price": 250},
            ]
        },
    )

    assert response.status_code == 200, response.json
    assert response.json == {"order_id": "1", "version": 3, "total_cents": 3250}
    assert events_of(database, "1") == [(1, "OrderPlaced"), (2, "ItemAdded"), (3, "ItemAdded")]
    assert row_of(database, "1") == ("ada", "open", 3250, 3)


def test_a_stale_expected_version_is_a_409_that_writes_nothing(
    client: FlaskClient, database: psycopg.Connection
) -> None:
    place(client, "1")
    client.post("/orders/1/items", json={"items": [{"sku": "book", "quantity": 1, "price": 100}]})

    response = client.post(
        "/orders/1/items",
        json={"expected_version": 1, "items": [{"sku": "pen", "quantity": 1, "price": 250}]},
    )

    assert response.status_code == 409
    assert events_of(database, "1") == [(1, "OrderPlaced"), (2, "ItemAdded")]
    assert row_of(database, "1") == ("ada", "open", 100, 2)


def test_a_request_refused_after_appending_and_writing_the_row_leaves_neither(
    client: FlaskClient, database: psycopg.Connection
) -> None:
    place(client, "1")

    # The first item is appended and the row flushed; the second is refused (422).
    response = client.post(
        "/orders/1/items",
        json={
            "items": [
                {"sku": "book", "quantity": 2, "price": 1500},
                {"sku": "pen", "quantity": 0, "price": 250},
            ]
        },
    )

    assert response.status_code == 422
    assert events_of(database, "1") == [(1, "OrderPlaced")]
    assert row_of(database, "1") == ("ada", "open", 0, 1)


def test_an_exception_after_appending_and_writing_the_row_leaves_neither(
    app: Flask, client: FlaskClient, database: psycopg.Connection
) -> None:
    # The event is appended, then the row's INSERT fails at the commit: the customer's
    # name does not fit its column. The exception reaches the test client (TESTING).
    with pytest.raises(Exception, match="value too long"):
        client.post("/orders", json={"order_id": "1", "customer": "x" * 41})

    assert events_of(database, "1") == []
    assert row_of(database, "1") is None
    assert place(client, "1") == 1  # the stream is still free


def test_the_projection_catches_up_with_committed_orders(
    app: Flask, client: FlaskClient, database: psycopg.Connection
) -> None:
    place(client, "1", "ada")
    place(client, "2", "ada")
    place(client, "3", "bob")
    client.post("/orders/1/items", json={"items": [{"sku": "book", "quantity": 2, "price": 1500}]})
    client.post("/orders/3/items", json={"items": [{"sku": "pen", "quantity": 1, "price": 250}]})
    client.post("/orders/2/items", json={"items": [{"sku": "pen", "quantity": 0, "price": 1}]})

    wait_for_feed(app, 5)
    with app.app_context():
        assert catch_up() == 5  # the refused request's events were never committed
        assert catch_up() == 0

    assert database.execute(
        "SELECT customer, orders, total_cents FROM customer_summaries ORDER BY customer"
    ).fetchall() == [("ada", 2, 3000), ("bob", 1, 250)]


def test_the_cli_command_runs_the_projection(app: Flask, client: FlaskClient) -> None:
    place(client, "1")
    wait_for_feed(app, 1)

    result = app.test_cli_runner().invoke(args=["orders", "project"])

    assert result.exit_code == 0, result.output
    assert result.output == "1 events handled\n"
