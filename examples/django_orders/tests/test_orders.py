"""The order service through Django's test client, against PostgreSQL."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import transaction
from orders import domain, views
from orders.events import OrderPaid, OrderPlaced

from eventstore import NO_STREAM

EVENTS = "SELECT event_type FROM events WHERE stream_id = %s ORDER BY version"
ROWS = "SELECT status, version FROM orders_order WHERE order_id = %s"


def place(client, order_id: str, **extra: object):
    body = {"order_id": order_id, "customer": "ada", "total_cents": 1250, **extra}
    return client.post("/orders/", body, content_type="application/json")


# -- requests that commit: what the database holds afterwards -------------------------


@pytest.mark.django_db(transaction=True)
def test_a_placed_order_commits_its_event_and_its_row(
    client, django_committed_event_store, committed
):
    response = place(client, "o-1")
    assert response.status_code == 201, response.content
    assert committed(EVENTS, "order-o-1") == [("OrderPlaced",)]
    assert committed(ROWS, "o-1") == [("placed", 1)]


@pytest.mark.django_db(transaction=True)
def test_an_exception_after_both_writes_leaves_neither(
    client, django_committed_event_store, committed, monkeypatch
):
    def fail(order):
        raise RuntimeError("the warehouse is down")

    monkeypatch.setattr(views, "notify_warehouse", fail)
    with pytest.raises(RuntimeError, match="warehouse"):
        place(client, "o-2")
    assert committed(EVENTS, "order-o-2") == []
    assert committed(ROWS, "o-2") == []


@pytest.mark.django_db(transaction=True)
def test_a_conflict_is_409_and_leaves_neither(client, django_committed_event_store, committed):
    assert place(client, "o-3").status_code == 201
    # Someone pays for the order while a client still sees it at version 1.
    with transaction.atomic():
        domain.pay(django_committed_event_store, "o-3")
    response = client.post(
        "/orders/o-3/cancel", {"expected_version": 1}, content_type="application/json"
    )
    assert response.status_code == 409, response.content
    assert "expected 1" in response.json()["error"]
    assert committed(EVENTS, "order-o-3") == [("OrderPlaced",), ("OrderPaid",)]
    assert committed(ROWS, "o-3") == [("placed", 1)]  # the cancel's row change is undone


@pytest.mark.django_db(transaction=True)
def test_a_second_command_in_the_request_loads_what_the_first_appended(
    client, django_committed_event_store, committed
):
    response = place(client, "o-4", pay_now=True)
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "paid"
    assert committed(EVENTS, "order-o-4") == [("OrderPlaced",), ("OrderPaid",)]
    assert committed(ROWS, "o-4") == [("paid", 2)]


@pytest.mark.django_db(transaction=True)
def test_a_read_in_the_atomic_block_sees_the_append(django_committed_event_store):
    store = django_committed_event_store
    with transaction.atomic():
        store.append_events(
            "order-o-5", [OrderPlaced("o-5", "ada", 100)], expected_version=NO_STREAM
        )
        state, version = domain.repository(store).load("order-o-5")
        assert (state.status, version) == ("placed", 1)
        transaction.set_rollback(True)
    assert domain.repository(store).load("order-o-5")[1] == 0


@pytest.mark.django_db(transaction=True)
def test_a_cancel_at_the_current_version_commits(client, django_committed_event_store, committed):
    assert place(client, "o-6").status_code == 201
    response = client.post(
        "/orders/o-6/cancel",
        {"expected_version": 1, "reason": "changed my mind"},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    assert committed(ROWS, "o-6") == [("cancelled", 2)]


# -- the projection: reads the committed feed ----------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_projection_counts_each_placed_order_once(
    client, django_committed_event_store, committed, capsys
):
    for order_id in ("p-1", "p-2"):
        assert place(client, order_id).status_code == 201
    with django_committed_event_store.subscribe(poll_interval=0.1) as feed:
        next(feed), next(feed)  # both are in the feed now
    call_command("eventstore_project", "orders.projections:customer_totals", "--once")
    call_command("eventstore_project", "orders.projections:customer_totals", "--once")
    assert committed("SELECT customer, orders, total_cents FROM orders_customertotal") == [
        ("ada", 2, 2500)
    ]
    out = capsys.readouterr().out
    assert "customer_totals: handled 2 events" in out
    assert "customer_totals: handled 0 events" in out


# -- a rolled-back test: fast, nothing commits ----------------------------------------


@pytest.mark.django_db
def test_in_a_rolled_back_test_the_request_joins_the_tests_transaction(client, django_event_store):
    assert place(client, "r-1", pay_now=True).status_code == 201
    state, version = domain.repository(django_event_store).load("order-r-1")
    assert (state.status, version) == ("paid", 2)
    assert [e.data for e in django_event_store.load_events("order-r-1")] == [
        OrderPlaced("r-1", "ada", 1250),
        OrderPaid("r-1"),
    ]
    # Nothing is committed: the store's own pool does not see it.
    assert django_event_store.store.stream_version("order-r-1") == 0
