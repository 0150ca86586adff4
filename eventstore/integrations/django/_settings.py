"""The ``EVENTSTORE`` setting, checked: which database alias, which registry, NOTIFY.

Every mistake a project can make here raises :class:`~eventstore.errors.IntegrationError`
naming the setting and what to write instead.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connections
from sqlalchemy.engine import URL

from eventstore.errors import IntegrationError
from eventstore.registry import EventRegistry

SETTING = "EVENTSTORE"

KEYS = {
    "DATABASE": "the alias in DATABASES the store runs on (default: 'default')",
    "REGISTRY": "'package.module:name' of the EventRegistry (default: none)",
    "NOTIFY": "whether appends wake subscriptions at once (default: True)",
}
"""The keys ``EVENTSTORE`` may have, all optional."""

_DJANGO_ONLY_OPTIONS = frozenset(
    {
        "assume_role",
        "context",
        "cursor_factory",
        "isolation_level",
        "pool",
        "prepare_threshold",
        "server_side_binding",
    }
)
"""``DATABASES[alias]["OPTIONS"]`` keys Django consumes itself; the others go to libpq."""


@dataclass(frozen=True)
class StoreSettings:
    """The ``EVENTSTORE`` setting for one alias, checked."""

    alias: str
    url: URL
    """``postgresql+psycopg://`` URL of the alias's database, as its settings say now."""
    registry_path: str | None
    notify: bool

    @property
    def key(self) -> tuple[object, ...]:
        """What a store built from these settings depends on (the password included)."""
        return (
            self.alias,
            self.url.render_as_string(hide_password=False),
            self.registry_path,
            self.notify,
        )

    def registry(self) -> EventRegistry | None:
        """The registry ``REGISTRY`` names, imported; None when it is not set."""
        if self.registry_path is None:
            return None
        found = import_object(self.registry_path, f"{SETTING}['REGISTRY']")
        if not isinstance(found, EventRegistry):
            raise IntegrationError(
                f"{SETTING}['REGISTRY'] = {self.registry_path!r} is a {type(found).__name__}, "
                "not an EventRegistry"
            )
        return found


def store_settings(alias: str | None = None) -> StoreSettings:
    """Read and check ``settings.EVENTSTORE`` for ``alias`` (default: its ``DATABASE``).

    Raises :class:`IntegrationError` for an unknown key, an alias missing from
    ``DATABASES``, a backend that is not PostgreSQL on psycopg 3, or a ``NOTIFY``
    that is not a bool.
    """
    config = getattr(settings, SETTING, None) or {}
    if not isinstance(config, dict):
        raise IntegrationError(f"settings.{SETTING} must be a dict, not {type(config).__name__}")
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        known = "; ".join(f"{key}: {meaning}" for key, meaning in KEYS.items())
        raise IntegrationError(f"settings.{SETTING} has unknown keys {unknown}: it takes {known}")
    chosen = alias if alias is not None else config.get("DATABASE", "default")
    registry_path = config.get("REGISTRY")
    if registry_path is not None and not isinstance(registry_path, str):
        raise IntegrationError(
            f"{SETTING}['REGISTRY'] must be a str 'package.module:name', "
            f"not {type(registry_path).__name__}"
        )
    notify = config.get("NOTIFY", True)
    if not isinstance(notify, bool):
        raise IntegrationError(f"{SETTING}['NOTIFY'] must be True or False, not {notify!r}")
    return StoreSettings(
        alias=chosen, url=database_url(chosen), registry_path=registry_path, notify=notify
    )


def check_alias(alias: object) -> Any:
    """Django's connection handler for ``alias``, if it is a PostgreSQL database on
    psycopg 3; :class:`IntegrationError` otherwise."""
    if not isinstance(alias, str) or alias not in connections.settings:
        configured = ", ".join(repr(name) for name in connections.settings)
        raise IntegrationError(
            f"no database {alias!r} in settings.DATABASES (it has {configured}): set "
            f"{SETTING}['DATABASE'] to one of them"
        )
    connection = connections[alias]
    if connection.vendor != "postgresql":
        raise IntegrationError(
            f"database {alias!r} uses {connection.settings_dict['ENGINE']!r}: pg-eventstore "
            "needs 'django.db.backends.postgresql'"
        )
    if getattr(connection, "Database", None) is None or connection.Database.__name__ != "psycopg":
        raise IntegrationError(
            f"database {alias!r} runs on psycopg2: pg-eventstore needs psycopg 3 "
            '(pip install "psycopg[binary]" and uninstall psycopg2; Django prefers psycopg 3)'
        )
    return connection


def database_url(alias: str) -> URL:
    """The ``postgresql+psycopg://`` URL of ``DATABASES[alias]`` as it is now (a test
    run switches ``NAME`` to the test database): NAME, USER, PASSWORD, HOST, PORT,
    and the ``OPTIONS`` libpq takes (``sslmode``, ``service``, ...). A ``HOST`` that is
    a unix socket directory goes into the query (``?host=/run/postgresql``)."""
    connection = check_alias(alias)
    given = connection.settings_dict
    options = given.get("OPTIONS") or {}
    query = {
        name: str(value)
        for name, value in options.items()
        if name not in _DJANGO_ONLY_OPTIONS and isinstance(value, (str, int))
    }
    host, port = given.get("HOST") or None, given.get("PORT") or None
    if host is not None and str(host).startswith("/"):
        # A unix socket directory cannot be a URL's host: libpq takes it as an option.
        query["host"] = str(host)
        host = None
        if port is not None:
            query["port"] = str(port)
            port = None
    return URL.create(
        "postgresql+psycopg",
        username=given.get("USER") or None,
        password=given.get("PASSWORD") or None,
        host=host,
        port=int(port) if port is not None else None,
        database=given.get("NAME") or ("postgres" if given.get("NAME") is None else None),
        query=query,
    )


def import_object(path: object, what: str) -> object:
    """The object ``'package.module:name'`` names; :class:`IntegrationError` saying which
    part failed otherwise. ``what`` names the setting or argument in messages."""
    if not isinstance(path, str) or path.count(":") != 1 or not all(path.split(":")):
        raise IntegrationError(f"{what} must be 'package.module:name', not {path!r}")
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise IntegrationError(f"{what} = {path!r}: cannot import {module_name!r}: {exc}") from exc
    found = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise IntegrationError(
                f"{what} = {path!r}: module {module_name!r} has no {attribute!r}"
            ) from None
    return found
