"""What one upcaster costs per event read, next to the same event read at its
class's own version (no upcaster applies).

    python -m benchmarks.upcaster_cost [--events 10000] [--rounds 15]

Two classes with the same fields: ``Current`` is registered at version 1 and its
events are read as stored; ``Upcast`` is registered at version 2 and its events
were stored by version 1 (which named a field differently), so each goes through
one upcaster. Both are decoded as every read decodes them
(``CborCodec.decode_event_data``) and loaded as whole streams from an in-memory
store (``load_events``: the decode and everything around it, no database). The
sides run interleaved, round by round, and the median of the rounds is
reported, with what the upcaster function itself takes: the library's share of
an upcast event is ``upcast - current - function``. Absolute times are this
machine's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventstore import EventRegistry, InMemoryEventStore, NewEvent


@dataclass(frozen=True)
class Current:
    order_id: str
    amount_cents: int
    currency: str


@dataclass(frozen=True)
class Upcast:
    order_id: str
    amount_cents: int
    currency: str


def renamed(fields: dict[str, Any]) -> dict[str, Any]:
    """The upcaster: version 1 called the amount ``amount_cent``."""
    return {
        "order_id": fields["order_id"],
        "amount_cents": fields["amount_cent"],
        "currency": fields["currency"],
    }


STORED = {
    "Current": {"order_id": "o-1234", "amount_cents": 1999, "currency": "EUR"},
    "Upcast": {"order_id": "o-1234", "amount_cent": 1999, "currency": "EUR"},
}
"""The stored fields of each: a plain map, as version 1 of a class stores it."""


def filled_store(events: int) -> InMemoryEventStore:
    registry = EventRegistry()
    registry.register(Current)
    registry.register(Upcast, version=2)
    registry.upcaster("Upcast", from_version=1)(renamed)
    store = InMemoryEventStore(registry=registry)
    for name, fields in STORED.items():
        # A dict payload is stored as a plain map: the bytes version 1 wrote.
        store.append_events(name, [NewEvent(name, fields)] * events, expected_version=0)
    return store


def seconds_per(call: Callable[[], Any], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - start) / count


def measure(events: int, rounds: int) -> dict[str, float]:
    """Median nanoseconds per event of each case."""
    store = filled_store(events)
    decode = store.codec.decode_event_data
    payloads = {name: store.codec.encode(fields) for name, fields in STORED.items()}
    expected = Upcast("o-1234", 1999, "EUR")
    assert decode("s", 1, "Upcast", payloads["Upcast"]) == expected
    assert store.load_events("Upcast", limit=1)[0].data == expected
    cases: dict[str, Callable[[], float]] = {
        "decode, no upcaster": lambda: seconds_per(
            lambda: decode("s", 1, "Current", payloads["Current"]), events
        ),
        "decode, one upcaster": lambda: seconds_per(
            lambda: decode("s", 1, "Upcast", payloads["Upcast"]), events
        ),
        "the function alone": lambda: seconds_per(lambda: renamed(STORED["Upcast"]), events),
        "load, no upcaster": lambda: seconds_per(lambda: store.load_events("Current"), 1) / events,
        "load, one upcaster": lambda: seconds_per(lambda: store.load_events("Upcast"), 1) / events,
    }
    figures: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            figures[name].append(case())
    return {name: statistics.median(values) * 1e9 for name, values in figures.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.upcaster_cost", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--events", type=int, default=10_000, help="events per stream")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    args = parser.parse_args(argv)
    ns = measure(args.events, args.rounds)
    for name, value in ns.items():
        print(f"{name:>22}: {value:7.0f} ns per event")
    for what in ("decode", "load"):
        share = ns[f"{what}, one upcaster"] - ns[f"{what}, no upcaster"] - ns["the function alone"]
        print(f"{'library share, ' + what:>22}: {share:7.0f} ns per upcast event")


if __name__ == "__main__":
    main()
