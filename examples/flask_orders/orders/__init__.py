"""A small order service on Flask, Flask-SQLAlchemy and pg-eventstore.

``create_app()`` reads the database from ``DATABASE_URL`` (``postgres://``,
``postgresql://`` or ``postgresql+psycopg://``: made a psycopg 3 URL here).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from eventstore import ConcurrencyError, migrations
from eventstore.urls import normalize_url
from orders.domain import OrderError
from orders.extensions import db, events


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    if "DATABASE_URL" in os.environ:
        app.config["SQLALCHEMY_DATABASE_URI"] = normalize_url(os.environ["DATABASE_URL"])
    app.config.update(config or {})
    db.init_app(app)
    events.init_app(app)  # after db.init_app: the store uses db's engine and session

    from orders import models  # noqa: F401  (the tables db.create_all() makes)
    from orders.projection import cli
    from orders.views import blueprint

    app.register_blueprint(blueprint)
    app.cli.add_command(cli)
    app.register_error_handler(ConcurrencyError, lambda e: ({"error": str(e)}, 409))
    app.register_error_handler(OrderError, lambda e: ({"error": str(e)}, 422))
    return app


def create_schema() -> None:
    """In an application context: the app's tables, then the event store's."""
    db.create_all()
    migrations.upgrade(db.engine)
