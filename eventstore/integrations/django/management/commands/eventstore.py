"""``manage.py eventstore <subcommand> [args]``: the ``eventstore`` command on the
Django database.

The database is ``EVENTSTORE['DATABASE']`` (or ``--database ALIAS`` before the
subcommand), handed to the subcommand as ``DATABASE_URL`` for the length of the
call, so every subcommand takes it as it takes it from the environment; a
``--url`` given to the subcommand still wins. ``manage.py eventstore --help``
lists the subcommands; the exit code is the subcommand's.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.base import BaseCommand

from eventstore.integrations.django._settings import store_settings
from eventstore.urls import DATABASE_URL_VARIABLE


class Command(BaseCommand):  # type: ignore[misc]
    help = (
        "Run an `eventstore` subcommand (doctor, stats, migrate, check-events, export, ...) "
        "on the Django database: manage.py eventstore doctor"
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--database",
            default=None,
            help="The database alias (default: EVENTSTORE['DATABASE'], else 'default').",
        )
        parser.add_argument(
            "argv",
            nargs=argparse.REMAINDER,
            metavar="SUBCOMMAND [ARGS]",
            help="The eventstore subcommand and its arguments (`manage.py eventstore` lists them).",
        )

    def handle(self, *args: Any, database: str | None, argv: list[str], **options: Any) -> None:
        from eventstore.cli import main

        url = store_settings(database).url.render_as_string(hide_password=False)
        with _environment(DATABASE_URL_VARIABLE, url):
            code = main(list(argv) or ["--help"])
        if code:
            raise SystemExit(code)


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
