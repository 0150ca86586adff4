"""The process that measures iterating a very long stream: iterate one stream
through one side and report the rate and the peak RSS growth, isolated from
everything else the suite does.

``python -m benchmarks._iterate_child --side S --url U --stream ID --warm-stream ID
--page N --expect N`` prints one JSON object: ``count``, ``seconds``,
``rss_before_kb``, ``peak_after_kb``, ``growth_kb`` and ``method``. Exits 1
when the count is not ``--expect``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from benchmarks._sides import FLOOR, LIBRARY, PEER

if TYPE_CHECKING:
    from benchmarks._floor import FloorSide
    from benchmarks._library import LibrarySide
    from benchmarks._peer import PeerSide


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run one measured iteration; see the module docstring."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", choices=(LIBRARY, FLOOR, PEER), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--warm-stream", required=True)
    parser.add_argument("--page", type=int, required=True)
    parser.add_argument("--expect", type=int, required=True)
    args = parser.parse_args(argv)

    if args.side == LIBRARY:
        from benchmarks._library import LibrarySide as Library

        side: LibrarySide | FloorSide | PeerSide = Library(args.url)
    elif args.side == FLOOR:
        from benchmarks._floor import FloorSide as Floor

        side = Floor(args.url)
    else:
        from benchmarks._peer import PeerSide as Peer

        side = Peer(args.url)
    try:
        side.iterate(args.warm_stream, args.page)  # connection, prepared statements, imports
        if _reset_peak() and _status_kb("VmHWM") is not None:
            method = "VmHWM after clear_refs"
            before = _status_kb("VmRSS") or 0
        else:
            method = "ru_maxrss"
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        count = side.iterate(args.stream, args.page)
        seconds = time.perf_counter() - start
        if method == "ru_maxrss":
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        else:
            after = _status_kb("VmHWM") or 0
    finally:
        side.close()
    print(
        json.dumps(
            {
                "count": count,
                "seconds": seconds,
                "rss_before_kb": before,
                "peak_after_kb": after,
                "growth_kb": max(0, after - before),
                "method": method,
            }
        )
    )
    return 0 if count == args.expect else 1


if __name__ == "__main__":
    raise SystemExit(main())
