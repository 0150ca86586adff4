"""Where the time goes with 8 writers and a live subscription in one process:
cProfile of every thread (wall time), ``notify=True`` or ``notify=False``.

    python -m benchmarks.notify_profile URL on|off [seconds]

URL is a migrated database (``eventstore migrate upgrade``); the events written
stay there. Prints the rate, the events delivered, the number of statements
the store ran (appends plus the subscriber's feed reads) and the top of the
merged profile.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from eventstore import NewEvent, PostgresEventStore

WRITERS = 8


def main(url: str, notify: bool, seconds: float) -> None:
    store = PostgresEventStore.from_url(url, pool_size=WRITERS, max_overflow=0, notify=notify)
    reader = PostgresEventStore.from_url(url, pool_size=1, max_overflow=0)
    stop = threading.Event()
    delivered = [0]
    written = [0] * WRITERS
    run = time.monotonic_ns()

    def follow() -> None:
        with reader.subscribe(after=reader.feed_head(), poll_interval=1.0) as subscription:
            threading.Thread(target=lambda: (stop.wait(), subscription.stop()), daemon=True).start()
            for _ in subscription:
                delivered[0] += 1

    def write(index: int) -> None:
        version = 0
        while not stop.is_set():
            version = store.append_events(
                f"profile-{run}-{index}", [NewEvent("T", {"a": 1})], expected_version=version
            )
        written[index] = version

    profiles: list[cProfile.Profile] = []

    def profiled(target: Callable[..., None], *args: Any) -> None:
        profile = cProfile.Profile()
        profiles.append(profile)
        profile.enable()
        try:
            target(*args)
        finally:
            profile.disable()

    threads = [threading.Thread(target=profiled, args=(follow,))]
    threads += [threading.Thread(target=profiled, args=(write, i)) for i in range(WRITERS)]
    started = time.perf_counter()
    try:
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        store.close()
        reader.close()
    elapsed = time.perf_counter() - started
    stats = pstats.Stats(profiles[0], stream=io.StringIO())
    for profile in profiles[1:]:
        stats.add(profile)
    statements = sum(
        calls
        for (filename, _, function), (calls, *_) in stats.stats.items()  # type: ignore[attr-defined]
        if filename.endswith("postgres.py") and function == "_fetch_autocommit"
    )
    print(
        f"notify={notify}: {sum(written) / elapsed:,.0f} events/s written, "
        f"{delivered[0]:,} delivered, {statements:,} statements ({sum(written):,} appends)"
    )
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(15)
    print(out.getvalue())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] == "on", float(sys.argv[3]) if len(sys.argv) > 3 else 4.0)
