"""What the global feed costs: append latency before and after the feed revision,
and the rate at which the feed reads, measured in one run on one server.

Usage: python benchmarks/feed_cost.py [--url URL] [--rounds N]

Two scratch databases are created on the server at ``--url`` (default: the local
server): one migrated to the first revision (the design's schema), one to head.
Single-event appends alternate between the cases call by call (so machine noise
hits them alike), each a prepared statement in autocommit; the "before"
statement is the append as it was before the feed (no stream-order check, no
NOTIFY), on the old schema. The median latency of each case is printed with
its ratio to "before".
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

import cbor2
import psycopg

from eventstore import NewEvent, PostgresEventStore, migrations
from eventstore.postgres import _APPEND_ONE
from eventstore.urls import normalize_url

PAYLOAD = {
    "order_id": "abc-123",
    "amount": 123.45,
    "items": [{"sku": "x" * 20, "qty": 2}] * 3,
}
METADATA = '{"correlation_id":"c1"}'
# The single-event append as it was before the feed: no stream-order check, no NOTIFY.
APPEND_BEFORE_FEED = """
WITH head AS (
    SELECT coalesce(max(version), 0) AS version FROM events WHERE stream_id = %(stream_id)s
), inserted AS (
    INSERT INTO events (stream_id, version, event_type, event_data, metadata)
    SELECT %(stream_id)s, head.version + 1, %(type)s, %(data)s, %(metadata)s::jsonb
    FROM head
    WHERE head.version BETWEEN %(lowest)s::bigint AND %(highest)s::bigint
    RETURNING version
)
SELECT (SELECT version FROM inserted), (SELECT version FROM head)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--appends", type=int, default=3000, help="per case")
    parser.add_argument("--feed-events", type=int, default=100_000)
    args = parser.parse_args()
    server = normalize_url(args.url).set(drivername="postgresql")
    names = {
        "before": f"es_bench_{uuid.uuid4().hex[:8]}",
        "after": f"es_bench_{uuid.uuid4().hex[:8]}",
    }
    admin = psycopg.connect(server.render_as_string(hide_password=False), autocommit=True)
    for name in names.values():
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        urls = {
            k: server.set(database=v).render_as_string(hide_password=False)
            for k, v in names.items()
        }
        migrations.upgrade(urls["before"], "eventstore_0001")
        migrations.upgrade(urls["after"])
        run(urls, args.appends, args.feed_events)
    finally:
        for name in names.values():
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(urls: dict[str, str], appends: int, feed_events: int) -> None:
    data = cbor2.dumps(PAYLOAD)
    before = psycopg.connect(urls["before"], autocommit=True)
    after = psycopg.connect(urls["after"], autocommit=True)
    store = PostgresEventStore.from_url(urls["after"])

    def raw(connection: psycopg.Connection, statement: str) -> Callable[[], None]:
        def append() -> None:
            params = {
                "stream_id": f"s-{time.perf_counter_ns()}",
                "type": "OrderPlaced",
                "data": data,
                "metadata": METADATA,
                "lowest": 0,
                "highest": 0,
            }
            connection.execute(statement, params, prepare=True).fetchall()

        return append

    def library() -> None:
        event = NewEvent("OrderPlaced", PAYLOAD, {"correlation_id": "c1"})
        store.append_events(f"l-{time.perf_counter_ns()}", [event], expected_version=0)

    cases = {
        "append, design schema (before)": raw(before, APPEND_BEFORE_FEED),
        "append, feed schema + NOTIFY (after)": raw(after, _APPEND_ONE),
        "append_events() on the feed schema": library,
    }
    for append in cases.values():
        for _ in range(200):
            append()
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(appends):
        for name, append in cases.items():
            start = time.perf_counter()
            append()
            timings[name].append((time.perf_counter() - start) * 1e6)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    base = medians["append, design schema (before)"]
    print(f"{'single-event append':40} {'p50':>9} {'ratio':>7}")
    for name, value in medians.items():
        print(f"{name:40} {value:6.0f} us {value / base:7.2f}")

    batch = [NewEvent("OrderPlaced", PAYLOAD) for _ in range(1000)]
    for number in range(feed_events // 1000):
        store.append_events(f"feed-{number}", batch, expected_version=0)
    start = time.perf_counter()
    count = sum(1 for _ in store.iter_all(batch_size=1000))
    elapsed = time.perf_counter() - start
    rate = count / elapsed
    print(f"feed read (iter_all, pages of 1000): {count} events, {rate:,.0f} events/s")
    store.close()


if __name__ == "__main__":
    main()
