"""The application's extension objects, created once and initialised on each app."""

from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from eventstore.integrations.flask import EventStoreExtension
from orders.domain import registry


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
events = EventStoreExtension(db=db, registry=registry)
