"""Write the golden files: the stored bytes of v1_model's events and snapshot state.

Run once, by the version of the library that wrote version-1 payloads (they must
never change), from the repository's root::

    python tests/golden/write_golden.py

Each event's payload goes to ``event-<version>-<event type>.cbor``, the snapshot
state to ``snapshot-<version>.cbor``; the files are checked in, and
tests/test_evolving_events.py reads them with changed classes.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    sys.path.insert(0, str(HERE))
    from v1_model import EVENTS, SNAPSHOT_STATE, SNAPSHOT_VERSION, registry

    from eventstore.codec import CborCodec

    codec = CborCodec(registry)
    for version, event in enumerate(EVENTS, start=1):
        name = registry.name_of(event)
        (HERE / f"event-{version}-{name}.cbor").write_bytes(codec.encode_payload(event))
    (HERE / f"snapshot-{SNAPSHOT_VERSION}.cbor").write_bytes(codec.encode(SNAPSHOT_STATE))


if __name__ == "__main__":
    main()
