"""The Flask extension: one event store per application, inside ``db.session``'s transaction.

Install with ``pip install "pg-eventstore[flask]"``::

    db = SQLAlchemy(model_class=Base)
    events = EventStoreExtension(db=db, registry=registry)

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg://..."
        db.init_app(app)
        events.init_app(app)  # after db.init_app: it uses db's engine for this app
        return app

In a request (or any application context), ``events.store`` (or
:func:`current_event_store`) is the current application's store. With ``db``, by
default every call of that store runs on ``db.session``'s connection, inside the
session's transaction: ``db.session.commit()`` commits the events together with
the rows, a rollback (or a request that ends without a commit: Flask-SQLAlchemy
removes the session at teardown) drops both. An append writes inside a
savepoint, so a :class:`~eventstore.errors.ConcurrencyError` leaves the session
usable, and reads see the session's own uncommitted appends. The store never
commits or rolls back the session.

Configuration (``app.config``):

``EVENTSTORE_JOIN_SESSION`` (default True)
    With ``db``: False gives the plain store, whose calls commit on their own.
``EVENTSTORE_DATABASE_URL``
    Without ``db``: the extension builds the store with
    :meth:`PostgresEventStore.from_url <eventstore.PostgresEventStore.from_url>`
    (``postgres://``, ``postgresql://`` or ``postgresql+psycopg://``), passing it
    ``EVENTSTORE_STORE_OPTIONS`` (a dict: ``statement_timeout``, ``pool_size``,
    ...); that store is closed when the application is garbage-collected or the
    process exits (or earlier by ``events.unbound_store.close()``).

``events.unbound_store`` is the underlying store, whose calls commit on their
own: for subscriptions, projection runners and work outside a request. (The
session-bound store hands ``subscribe``, ``feed_head`` and projection runners to
it already: they follow the committed feed.)

The engine must use psycopg 3: write ``SQLALCHEMY_DATABASE_URI`` as
``postgresql+psycopg://`` (before SQLAlchemy 2.1 a plain ``postgresql://`` URL
means psycopg2); an engine on another driver is refused with
:class:`~eventstore.errors.ValidationError`.
Misuse (no application context, ``init_app`` not called, no database, both
``db`` and ``EVENTSTORE_DATABASE_URL``) raises :class:`FlaskExtensionError`.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, has_app_context

from eventstore._engines import check_engine
from eventstore.errors import IntegrationError, ValidationError
from eventstore.postgres import PostgresEventStore

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy.orm import Session

    from eventstore.registry import EventRegistry
    from eventstore.store import EventStore

EXTENSION_KEY = "eventstore"
"""The key of the application's state in ``app.extensions``."""


class FlaskExtensionError(IntegrationError):
    """The Flask extension was used in a way that cannot work; the message says
    how to set it up."""


class _AppState:
    """What the extension keeps for one application (in ``app.extensions``)."""

    def __init__(
        self, extension: EventStoreExtension, store: PostgresEventStore, bound: EventStore | None
    ) -> None:
        self.extension = extension
        self.store = store
        self.bound = bound


class EventStoreExtension:
    """The event store of each Flask application the extension is initialised on.

    ``db``: a Flask-SQLAlchemy ``SQLAlchemy`` whose engine (for each application)
    the store uses and whose session its calls join. Without it the application
    config's ``EVENTSTORE_DATABASE_URL`` names the database. ``registry``: the
    :class:`~eventstore.EventRegistry` payloads are rebuilt with.

    One extension object serves any number of applications (the
    application-factory pattern): :meth:`init_app` each; :attr:`store` is the one
    of the application of the current context.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        db: SQLAlchemy | None = None,
        registry: EventRegistry | None = None,
    ) -> None:
        self.db = db
        self.registry = registry
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Build ``app``'s store. With ``db``, call ``db.init_app(app)`` first.

        Raises :class:`FlaskExtensionError` when the application has no database
        for the store (neither ``db`` nor ``EVENTSTORE_DATABASE_URL``), has both,
        has no ``db.init_app(app)`` yet, or already has an event store; and
        :class:`~eventstore.errors.ValidationError` when ``db``'s engine is not on
        psycopg 3 or the URL or options are bad.
        """
        if EXTENSION_KEY in app.extensions:
            raise FlaskExtensionError(
                f"the application {app.name!r} already has an event store: call init_app "
                "once per application"
            )
        url = app.config.get("EVENTSTORE_DATABASE_URL")
        if self.db is not None and url:
            raise FlaskExtensionError(
                "EventStoreExtension has both db= and EVENTSTORE_DATABASE_URL: with db= the "
                "store uses db's engine and joins db.session; remove one of them"
            )
        if self.db is not None:
            store = PostgresEventStore(self._session_engine(app, self.db), self.registry)
            joins = app.config.setdefault("EVENTSTORE_JOIN_SESSION", True)
            bound = store.bind(_current_session(app, self.db)) if joins else None
        elif url:
            options: Mapping[str, Any] = app.config.get("EVENTSTORE_STORE_OPTIONS", {})
            store = PostgresEventStore.from_url(url, self.registry, **options)
            bound = None
        else:
            raise FlaskExtensionError(
                "EventStoreExtension has no database: pass db= (a Flask-SQLAlchemy "
                "SQLAlchemy, initialised on the app first) or set EVENTSTORE_DATABASE_URL "
                "in the app config"
            )
        weakref.finalize(app, store.close)  # also at exit; closing twice is harmless
        app.extensions[EXTENSION_KEY] = _AppState(self, store, bound)

    @property
    def store(self) -> EventStore:
        """The current application's store: joined to ``db.session`` (unless
        ``EVENTSTORE_JOIN_SESSION`` is False or there is no ``db``), else the
        store whose calls commit on their own."""
        state = self._state()
        return state.bound if state.bound is not None else state.store

    @property
    def unbound_store(self) -> PostgresEventStore:
        """The current application's store whose calls commit on their own: for
        subscriptions, projection runners, and work outside a request."""
        return self._state().store

    def _state(self) -> _AppState:
        state = _app_state()
        if state.extension is not self:
            raise FlaskExtensionError(
                f"the application {current_app.name!r} was initialised with another "
                "EventStoreExtension: use that one, or current_event_store()"
            )
        return state

    @staticmethod
    def _session_engine(app: Flask, db: SQLAlchemy) -> Any:
        if app.extensions.get("sqlalchemy") is not db:
            raise FlaskExtensionError(
                "call db.init_app(app) before EventStoreExtension.init_app(app): the store "
                "uses db's engine for the app"
            )
        with app.app_context():
            engine = db.engine
        try:
            return check_engine(engine)
        except ValidationError as error:
            raise ValidationError(
                f"{error} (write SQLALCHEMY_DATABASE_URI as postgresql+psycopg://...: "
                "before SQLAlchemy 2.1, a plain postgresql:// URL means psycopg2)"
            ) from None


def current_event_store() -> EventStore:
    """The store of the current application (see :attr:`EventStoreExtension.store`),
    whichever extension object initialised it."""
    return _app_state().extension.store


def _app_state() -> _AppState:
    if not has_app_context():
        raise FlaskExtensionError(
            "the event store is per application: use it in a request, a CLI command or "
            "`with app.app_context():`"
        )
    state = current_app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, _AppState):
        raise FlaskExtensionError(
            f"the application {current_app.name!r} has no event store: call "
            "EventStoreExtension.init_app(app) in its factory"
        )
    return state


def _current_session(app: Flask, db: SQLAlchemy) -> Any:
    """What the bound store calls at each call: ``app``'s current ``db.session``."""
    owner = weakref.ref(app)

    def session() -> Session:
        if not has_app_context():
            raise FlaskExtensionError(
                "the event store joins db.session, which exists in an application "
                "context: call it in a request, a CLI command or `with app.app_context():`"
            )
        if current_app._get_current_object() is not owner():  # type: ignore[attr-defined]
            raise FlaskExtensionError(
                f"this event store belongs to another application than {current_app.name!r}: "
                "take the store in the application's context (extension.store)"
            )
        return db.session()

    return session
