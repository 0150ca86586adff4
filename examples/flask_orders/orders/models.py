"""The read model the requests keep up to date, and the projection's table."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from orders.extensions import db


class OrderRow(db.Model):  # type: ignore[name-defined,misc]
    """One row per order, written in the same transaction as the order's events."""

    __tablename__ = "orders"

    order_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20))
    total_cents: Mapped[int]
    version: Mapped[int]


class CustomerSummary(db.Model):  # type: ignore[name-defined,misc]
    """Per customer: orders placed and their items' total. Written only by the
    ``customer_summaries`` projection, from the event feed."""

    __tablename__ = "customer_summaries"

    customer: Mapped[str] = mapped_column(String(40), primary_key=True)
    orders: Mapped[int]
    total_cents: Mapped[int]
