"""The ``customer_summaries`` projection: per customer, the orders placed and their
items' total, built from the event feed (committed events only) by a
:class:`~eventstore.ProjectionRunner`, in the runner's transaction with its
checkpoint: each event counts exactly once.

Run it with ``flask --app orders orders project`` (once, catching up) or
``flask --app orders orders project --follow`` (until interrupted), or call
:func:`catch_up` in an application context.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

import click
from flask.cli import AppGroup
from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert

from eventstore import Projection, ProjectionRunner, RecordedEvent
from orders.domain import ItemAdded, OrderPlaced
from orders.extensions import events
from orders.models import CustomerSummary, OrderRow

summaries = CustomerSummary.__table__
order_rows = OrderRow.__table__


def _add(connection: Connection, customer: str, orders: int, total_cents: int) -> None:
    statement = insert(summaries).values(customer=customer, orders=orders, total_cents=total_cents)
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=[summaries.c.customer],
            set_={
                "orders": summaries.c.orders + orders,
                "total_cents": summaries.c.total_cents + total_cents,
            },
        )
    )


def handle(event: RecordedEvent, connection: Any) -> None:
    data = event.data
    if isinstance(data, OrderPlaced):
        _add(connection, data.customer, 1, 0)
    elif isinstance(data, ItemAdded):
        # The order's row was committed with its events, so it is there.
        order_id = event.stream_id.removeprefix("order-")
        customer = connection.execute(
            select(order_rows.c.customer).where(order_rows.c.order_id == order_id)
        ).scalar_one()
        _add(connection, customer, 0, data.quantity * data.price_cents)


def reset(connection: Any) -> None:
    connection.execute(summaries.delete())


customer_summaries = Projection(
    "customer_summaries",
    handle,
    event_types=["OrderPlaced", "ItemAdded"],
    reset=reset,
)


def runner() -> ProjectionRunner:
    """A runner on the current app's store whose calls commit on their own (the
    projection reads the committed feed, not a request's session)."""
    return ProjectionRunner(events.unbound_store, customer_summaries, lock_timeout=10)


def catch_up() -> int:
    """Handle every committed event not handled yet; return how many."""
    with runner() as projection:
        return projection.run_once()


cli = AppGroup("orders", help="The order service's commands.")


@cli.command("project")
@click.option("--follow", is_flag=True, help="Keep handling new events until interrupted.")
def project_command(follow: bool) -> None:
    """Bring the customer_summaries projection up to date."""
    if not follow:
        click.echo(f"{catch_up()} events handled")
        return
    with runner() as projection, suppress(KeyboardInterrupt):
        projection.run()


@cli.command("init-db")
def init_db_command() -> None:
    """Create the app's tables and migrate the event store's to the newest revision."""
    from orders import create_schema

    create_schema()
    click.echo("schema ready")
