"""The order-processing story that ``eventstore demo`` tells, end to end.

:func:`run_demo` runs it against any PostgreSQL URL, in streams of its own
(``demo-<run>-...``, a new run number each time), and prints what happens to a
rich :class:`~rich.console.Console`, ending with the ``eventstore stats`` report.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from eventstore import migrations
from eventstore.cli.demo.orders import (
    DemoStarted,
    ItemAdded,
    ItemRemoved,
    Order,
    OrderPlaced,
    OrderShipped,
    evolve,
    registry,
    type_name,
)
from eventstore.cli.stats import render
from eventstore.errors import ConcurrencyError, EventStoreError, ProjectionLockedError
from eventstore.monitoring import StatsReport, collect_stats
from eventstore.postgres import PostgresEventStore
from eventstore.projections import Projection, ProjectionRunner
from eventstore.records import ANY, RecordedEvent
from eventstore.repository import Repository
from eventstore.urls import normalize_url

__all__ = ["PROJECTION_NAME", "RUNS_STREAM", "SNAPSHOT_EVERY", "DemoResult", "plain", "run_demo"]

SNAPSHOT_EVERY = 5
"""Small on purpose, so the story crosses the snapshot threshold twice."""

RUNS_STREAM = "demo-runs"
"""One event per run; the stream's version is the run number."""

PROJECTION_NAME = "demo-shipments"
"""Shared by every run: its checkpoint makes each run handle only new events."""


@dataclass
class DemoResult:
    """What a run of the demo did, for callers that check rather than read."""

    run: int
    stream_prefix: str
    orders: dict[str, Order] = field(default_factory=dict)
    conflict: ConcurrencyError | None = None
    retried_version: int = 0
    snapshot_version: int = 0
    stream_version: int = 0
    replayed: int = 0
    rebuilt_equal: bool = False
    full_replay_equal: bool = False
    feed_events: int = 0
    appended_events: int = 0
    projection_handled: int | None = None
    stats: StatsReport | None = None
    seconds: float = 0.0


class _Story:
    """One run: the store, the console, and the run's stream names."""

    def __init__(self, store: PostgresEventStore, console: Console, run: int) -> None:
        self.store = store
        self.console = console
        self.say = plain(console)
        self.result = DemoResult(run=run, stream_prefix=f"demo-{run}-")
        self.orders: Repository[Order] = Repository(
            store, Order, evolve, snapshot_every=SNAPSHOT_EVERY
        )

    def stream(self, number: int) -> str:
        return f"{self.result.stream_prefix}order-{number}"

    def heading(self, title: str) -> None:
        self.say()
        self.say(title)
        self.say("-" * len(title))

    def append(
        self, stream_id: str, events: Iterable[Any], state: Order, version: int
    ) -> tuple[Order, int]:
        events = list(events)
        state, new_version = self.orders.append(
            stream_id, events, state=state, expected_version=version
        )
        self.result.appended_events += len(events)
        self.result.orders[stream_id] = state
        return state, new_version

    # -- the chapters ---------------------------------------------------------------

    def place_orders(self) -> None:
        self.heading("1. Placing orders (each append is atomic and checks the version)")
        story: list[tuple[int, list[Any]]] = [
            (
                1,
                [
                    OrderPlaced("1", "ada"),
                    ItemAdded("book", 2, Decimal("12.50")),
                    ItemAdded("pen", 3, Decimal("1.20")),
                ],
            ),
            (2, [OrderPlaced("2", "bob"), ItemAdded("mug", 1, Decimal("8.00"))]),
            (3, [OrderPlaced("3", "cy"), ItemAdded("lamp", 1, Decimal("35.00"))]),
        ]
        for number, events in story:
            stream_id = self.stream(number)
            state, version = self.append(stream_id, events, Order(), 0)
            names = ", ".join(type(event).__name__ for event in events)
            self.say(f"{stream_id}: appended {names} -> version {version}")
            self.say(f"    {state.summary()}")
        stream_id = self.stream(3)
        state, version = self.orders.load(stream_id)
        state, version = self.append(
            stream_id,
            [ItemRemoved("lamp"), ItemAdded("desk", 1, Decimal("120.00"))],
            state,
            version,
        )
        self.say(f"{stream_id}: cy changes her mind: ItemRemoved, ItemAdded -> version {version}")
        self.say(f"    {state.summary()}")

    def race(self) -> None:
        self.heading("2. Optimistic concurrency: two clerks change order 2 at once")
        stream_id = self.stream(2)
        state, version = self.orders.load(stream_id)
        self.say(f"Both clerks loaded {stream_id} at version {version}.")
        additions = {
            "clerk-a": ItemAdded("tea", 1, Decimal("4.50")),
            "clerk-b": ItemAdded("sugar", 1, Decimal("2.00")),
        }
        outcomes: dict[str, int | ConcurrencyError] = {}
        failures: list[BaseException] = []
        barrier = threading.Barrier(len(additions))

        def clerk(name: str, event: ItemAdded) -> None:
            try:
                barrier.wait(timeout=30)
                _, new_version = self.orders.append(
                    stream_id, [event], state=state, expected_version=version
                )
                outcomes[name] = new_version
            except ConcurrencyError as conflict:
                outcomes[name] = conflict
            except BaseException as error:  # re-raised below, in the main thread
                failures.append(error)

        threads = [
            threading.Thread(target=clerk, args=(name, event), name=f"demo-{name}")
            for name, event in additions.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        winners = [name for name, outcome in outcomes.items() if isinstance(outcome, int)]
        losers = [name for name, outcome in outcomes.items() if not isinstance(outcome, int)]
        if len(winners) != 1 or len(losers) != 1:
            raise EventStoreError(
                f"expected one winner and one conflict, got {outcomes!r}: is another "
                f"writer appending to {stream_id}?"
            )
        winner, loser = winners[0], losers[0]
        conflict = outcomes[loser]
        assert isinstance(conflict, ConcurrencyError)
        self.result.conflict = conflict
        self.result.appended_events += 1
        self.say(f"{winner} adds {additions[winner].sku} (expected version {version}): ok")
        self.say(f"    -> version {outcomes[winner]}")
        self.say(f"{loser} adds {additions[loser].sku} (expected version {version}):")
        self.say(
            f"    ConcurrencyError caught: the stream is at {conflict.actual}, nothing was written"
        )
        state, version = self.orders.load(stream_id)
        self.say(f"{loser} reloads (version {version}: {state.summary()})")
        state, version = self.append(stream_id, [additions[loser]], state, version)
        self.result.retried_version = version
        self.say(f"{loser} retries at expected version {version - 1}: ok")
        self.say(f"    -> version {version}: {state.summary()}")

    def snapshots(self) -> Order:
        self.heading(f"3. Snapshots: the repository saves one every {SNAPSHOT_EVERY} events")
        stream_id = self.stream(1)
        state, version = self.orders.load(stream_id)
        self.say(f"{stream_id} is at version {version}; ada keeps shopping:")
        changes: list[Any] = [
            ItemAdded("notebook", 4, Decimal("3.10")),
            ItemAdded("stapler", 1, Decimal("9.90")),
            ItemAdded("ink", 2, Decimal("6.40")),
            ItemRemoved("pen"),
            ItemAdded("folder", 10, Decimal("0.80")),
            ItemAdded("tape", 2, Decimal("2.30")),
            ItemAdded("glue", 1, Decimal("1.90")),
            ItemAdded("ruler", 1, Decimal("1.50")),
            ItemAdded("marker", 5, Decimal("1.10")),
        ]
        for event in changes:
            previous = version
            state, version = self.append(stream_id, [event], state, version)
            detail = ", ".join(str(getattr(event, f.name)) for f in dataclasses.fields(event))
            note = ""
            if version // SNAPSHOT_EVERY > previous // SNAPSHOT_EVERY:
                snapshot = self.store.load_snapshot(stream_id)
                saved = snapshot.version if snapshot is not None else "none"
                note = f"  <- snapshot saved (stored: version {saved})"
            self.say(f"  version {version}: {type(event).__name__}({detail}){note}")
        self.result.stream_version = version
        self.say(f"    {state.summary()}")
        return state

    def rebuild(self, before: Order) -> None:
        self.heading("4. Rebuilding order 1 from its snapshot plus the events after it")
        stream_id = self.stream(1)
        snapshot = self.store.load_snapshot(stream_id)
        snapshot_version = snapshot.version if snapshot is not None else 0
        replayed: list[Any] = []

        def counting_evolve(order: Order, event: Any) -> Order:
            replayed.append(event)
            return evolve(order, event)

        loader: Repository[Order] = Repository(
            self.store, Order, counting_evolve, snapshot_every=SNAPSHOT_EVERY
        )
        rebuilt, version = loader.load(stream_id)
        full = Order()
        all_events = self.store.load_events(stream_id)
        for recorded in all_events:
            full = evolve(full, recorded.data)
        self.result.snapshot_version = snapshot_version
        self.result.replayed = len(replayed)
        self.result.rebuilt_equal = rebuilt == before
        self.result.full_replay_equal = full == before
        self.say(f"Loaded the snapshot at version {snapshot_version}, then replayed")
        self.say(
            f"{len(replayed)} events (versions {snapshot_version + 1}-{version}) "
            f"instead of all {len(all_events)}:"
        )
        self.say(f"    {rebuilt.summary()}")
        self.say(f"Rebuilt state equals the state before: {_yes(self.result.rebuilt_equal)}")
        self.say(
            f"A full replay of all {len(all_events)} events gives the same state: "
            f"{_yes(self.result.full_replay_equal)}"
        )
        if not (self.result.rebuilt_equal and self.result.full_replay_equal):
            raise EventStoreError(f"the rebuilt state of {stream_id} differs from the state before")

    def ship(self) -> None:
        self.heading("5. Shipping")
        for number, carrier in ((1, "parcel-post"), (2, "courier")):
            stream_id = self.stream(number)
            state, version = self.orders.load(stream_id)
            state, version = self.append(stream_id, [OrderShipped(carrier)], state, version)
            self.say(f"{stream_id}: OrderShipped -> version {version}; {state.summary()}")

    def feed(self) -> None:
        self.heading("6. The global feed: every event of every stream, in one order")
        events = list(self.store.iter_all(stream_prefix=self.result.stream_prefix))
        self.result.feed_events = len(events)
        self.say(f"iter_all(stream_prefix={self.result.stream_prefix!r}) reads this run's")
        self.say(
            f"{len(events)} of {self.result.appended_events} events in commit order "
            "(position = transaction-sequence):"
        )
        table = Table("position", "stream", "version", "event type", box=None, pad_edge=False)
        shown = events if len(events) <= 8 else events[:4] + events[-4:]
        for number, event in enumerate(shown):
            if len(events) > 8 and number == 4:
                table.add_row("...", f"({len(events) - 8} more)", "", "")
            table.add_row(
                str(event.position), event.stream_id, str(event.version), event.event_type
            )
        self.console.print(table)
        if len(events) < self.result.appended_events:
            self.say("(The others appear once older transactions still open elsewhere")
            self.say("on the server end: the feed never skips an event.)")

    def projection(self) -> None:
        self.heading("7. A projection: shipments per carrier, with a checkpoint")
        carriers: dict[str, int] = {}

        def count_shipment(event: RecordedEvent, connection: Any) -> None:
            carrier = getattr(event.data, "carrier", "?")
            carriers[carrier] = carriers.get(carrier, 0) + 1

        projection = Projection(
            PROJECTION_NAME, count_shipment, event_types=[type_name(OrderShipped)]
        )
        try:
            with ProjectionRunner(self.store, projection, lock_timeout=10) as runner:
                previous = runner.checkpoint()
                handled = runner.run_once()
                checkpoint = runner.checkpoint()
        except ProjectionLockedError:
            self.say(f"Skipped: projection {PROJECTION_NAME!r} is being run by another demo.")
            return
        self.result.projection_handled = handled
        since = "the start" if previous is None else f"its checkpoint {previous}"
        counts = ", ".join(f"{c}: {n}" for c, n in sorted(carriers.items())) or "none"
        self.say(f"Projection {PROJECTION_NAME!r} read the feed from {since}")
        self.say(f"and handled {handled} new OrderShipped events ({counts}).")
        self.say(f"Its checkpoint, {checkpoint}, is kept in projection_checkpoints:")
        self.say("the next run handles only the events appended after it.")

    def stats(self) -> None:
        self.heading("8. Statistics (eventstore stats)")
        report = collect_stats(self.store.engine, top=5)
        self.result.stats = report
        render(report, self.console)


def run_demo(
    url: str,
    console: Console,
    *,
    migrate: bool = True,
    describe: str | None = None,
) -> DemoResult:
    """Tell the order-processing story against the database at ``url``.

    Migrates the database to the newest schema revision first (unless
    ``migrate`` is False), then works only in streams of its own: ``demo-runs``
    and ``demo-<run>-order-<n>``, where ``<run>`` is new on every call, so runs
    never conflict with each other or with an application's streams. Event types
    are named ``demo.*``. ``describe`` replaces the redacted URL in the opening
    line. Prints the story to ``console``, ending with the ``eventstore stats``
    report, and returns what happened. Raises :class:`EventStoreError`
    subclasses (and psycopg / SQLAlchemy connection errors) when the database
    cannot be used.
    """
    started = time.monotonic()
    say = plain(console)
    where = describe or normalize_url(url).render_as_string(hide_password=True)
    say(f"Database: {where}")
    before = migrations.current(url)
    if migrate:
        migrations.upgrade(url)
        after = migrations.current(url)
        if before == after:
            say(f"Migrations: already at {after} (nothing to do)")
        else:
            say(f"Migrations: upgraded from {before or 'an empty database'} to {after}")
    with PostgresEventStore.from_url(url, registry=registry, pool_size=2, max_overflow=2) as store:
        stamp = datetime.now(timezone.utc)
        run = store.append_events(RUNS_STREAM, [DemoStarted(stamp)], expected_version=ANY)
        say(f"Run {run}: this run's streams start with 'demo-{run}-'")
        if run > 1:
            earlier = "1 earlier run" if run == 2 else f"{run - 1} earlier runs"
            say(f"(the streams of the {earlier} are still there)")
        story = _Story(store, console, run)
        story.place_orders()
        story.race()
        before_rebuild = story.snapshots()
        story.rebuild(before_rebuild)
        story.ship()
        story.feed()
        story.projection()
        story.stats()
    story.result.seconds = time.monotonic() - started
    say()
    say(
        f"Done in {story.result.seconds:.1f} s: {story.result.appended_events} events "
        f"in {len(story.result.orders)} orders,"
    )
    say("one conflict caught and retried, one order rebuilt from its snapshot.")
    return story.result


def plain(console: Console) -> Callable[..., None]:
    """A function that prints a line to ``console`` as it is (no markup, no highlighting)."""

    def say(line: str = "") -> None:
        console.print(line, markup=False, highlight=False)

    return say


def _yes(value: bool) -> str:
    return "yes" if value else "NO"
