"""pg-eventstore in a Django project (``pip install "pg-eventstore[django]"``).

Add ``"eventstore.integrations.django"`` to ``INSTALLED_APPS`` (its app label is
``eventstore``) and optionally configure it::

    EVENTSTORE = {
        "DATABASE": "default",                 # the alias the store runs on
        "REGISTRY": "orders.events:registry",  # an EventRegistry, 'module:name'
        "NOTIFY": True,                        # appends wake subscriptions at once
    }

- :func:`get_event_store` returns the store on Django's own connection: inside
  ``transaction.atomic()`` appends and reads join the block.
- ``manage.py migrate`` creates and upgrades the store's tables (the app's
  migrations run the library's Alembic revisions on Django's connection).
- ``manage.py eventstore <subcommand>`` runs the ``eventstore`` command (``doctor``,
  ``stats``, ``check-events``, ...) on the Django database.
- ``manage.py eventstore_project module:projection`` runs a projection.
- ``eventstore.integrations.django.pytest_plugin`` has pytest-django fixtures.
"""

from __future__ import annotations

try:
    import django  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        'eventstore.integrations.django needs Django: pip install "pg-eventstore[django]"'
    ) from exc

from eventstore.integrations.django._stores import close_event_stores, get_event_store

__all__ = ["close_event_stores", "get_event_store"]
