"""Logical backup: export streams and snapshots to one portable file, import them elsewhere.

:func:`export_events` writes the events (in feed order) and snapshots of a
database, or of the streams whose id starts with a prefix, to a single file;
:func:`import_events` loads such a file into another database migrated to head.
Event and snapshot bytes are copied as stored, never decoded, so no event class
needs to be importable; metadata and ``created_at`` are kept exactly.

The file is a CBOR sequence, gzip-compressed when its name ends in ``.gz``,
ending with a SHA-256 checksum; its format is specified in
``eventstore/transfer/_format.py``. An export reads one consistent snapshot of
the database in bounded memory (``_export.py``). An import verifies the whole
file before it writes anything, refuses the streams whose versions the target
already has, and imports each of the others whole, in file order (``_import.py``).
The statements both send are in ``_sql.py``.

:func:`bulk_append` writes the events of many streams at once on the import's
path, each stream at an expected version (``_bulk.py``).
"""

from __future__ import annotations

from eventstore._import_summary import ImportSummary, RefusedStream
from eventstore.errors import TransferError
from eventstore.transfer._bulk import StreamAppend, bulk_append
from eventstore.transfer._common import ProgressCallback
from eventstore.transfer._export import ExportSummary, export_events
from eventstore.transfer._format import FORMAT_NAME, FORMAT_VERSION
from eventstore.transfer._import import import_events

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ExportSummary",
    "ImportSummary",
    "ProgressCallback",
    "RefusedStream",
    "StreamAppend",
    "TransferError",
    "bulk_append",
    "export_events",
    "import_events",
]
