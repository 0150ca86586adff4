"""The ``customer_totals`` projection: orders placed per customer.

Run it with ``python manage.py eventstore_project orders.projections:customer_totals``.
It writes through the connection the runner hands it, the transaction that also
moves its checkpoint, so each event counts exactly once.
"""

from __future__ import annotations

from typing import Any

from eventstore import Projection, RecordedEvent

TABLE = "orders_customertotal"  # orders.models.CustomerTotal


def count_order(event: RecordedEvent, connection: Any) -> None:
    connection.exec_driver_sql(
        f"INSERT INTO {TABLE} (customer, orders, total_cents) "
        "VALUES (%(customer)s, 1, %(total)s) ON CONFLICT (customer) DO UPDATE "
        f"SET orders = {TABLE}.orders + 1, "
        f"total_cents = {TABLE}.total_cents + excluded.total_cents",
        {"customer": event.data.customer, "total": event.data.total_cents},
    )


def clear(connection: Any) -> None:
    connection.exec_driver_sql(f"DELETE FROM {TABLE}")


customer_totals = Projection(
    "customer_totals", count_order, event_types=["OrderPlaced"], reset=clear
)
