"""``manage.py eventstore_project module:projection``: run a projection from Django.

Feeds the :class:`~eventstore.Projection` that ``module:projection`` names from the
committed feed of the store :func:`~eventstore.integrations.django.get_event_store`
returns, until SIGINT or SIGTERM (``--once``: handle what is there now and exit).
Run one process per projection, under the same supervisor as the web workers; a
second process for the same projection waits as a standby and takes over.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from eventstore.errors import EventStoreError, IntegrationError
from eventstore.integrations.django._settings import import_object
from eventstore.integrations.django._stores import get_event_store
from eventstore.projections import Projection, ProjectionRunner


class Command(BaseCommand):  # type: ignore[misc]
    help = "Run a projection ('package.module:name' of a Projection) until stopped."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("projection", help="'package.module:name' of an eventstore Projection")
        parser.add_argument(
            "--database",
            default=None,
            help="The database alias (default: EVENTSTORE['DATABASE'], else 'default').",
        )
        parser.add_argument(
            "--once", action="store_true", help="Handle the events there now, then exit."
        )
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Forget the checkpoint and clear the projection's state first (a rebuild).",
        )
        parser.add_argument("--batch-size", type=int, default=100)

    def handle(
        self,
        *args: Any,
        projection: str,
        database: str | None,
        once: bool,
        reset: bool,
        batch_size: int,
        **options: Any,
    ) -> None:
        try:
            found = import_object(projection, "the projection")
            if not isinstance(found, Projection):
                raise IntegrationError(
                    f"{projection!r} is a {type(found).__name__}, not an eventstore Projection"
                )
            store = get_event_store(database)
            with ProjectionRunner(store, found, batch_size=batch_size) as runner:
                if reset:
                    runner.reset()
                if once:
                    handled = runner.run_once()
                    self.stdout.write(f"{found.name}: handled {handled} events")
                    return
                stop = threading.Event()
                for signum in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(signum, lambda *_: stop.set())
                self.stdout.write(f"{found.name}: running (SIGINT or SIGTERM stops it)")
                self.stdout.flush()
                runner.run(stop)
                self.stdout.write(f"{found.name}: stopped at {runner.checkpoint()}")
        except EventStoreError as error:
            raise CommandError(str(error)) from error
