"""The Django app: ``INSTALLED_APPS = [..., "eventstore.integrations.django"]``."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks

from eventstore.errors import IntegrationError
from eventstore.integrations.django._settings import store_settings


class EventStoreConfig(AppConfig):  # type: ignore[misc]
    """pg-eventstore's app, labelled ``eventstore`` (``manage.py migrate eventstore``)."""

    name = "eventstore.integrations.django"
    label = "eventstore"
    verbose_name = "pg-eventstore"
    default = True

    def ready(self) -> None:
        checks.register(check_settings)


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """``manage.py check``: the ``EVENTSTORE`` setting names a PostgreSQL alias on
    psycopg 3 and an importable registry (error ``eventstore.E001`` otherwise)."""
    try:
        store_settings().registry()
    except IntegrationError as error:
        return [checks.Error(str(error), id="eventstore.E001")]
    return []
