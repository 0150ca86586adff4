"""pg-eventstore: an event store on the PostgreSQL you already run.

Append events with optimistic concurrency, load version ranges, keep snapshots;
payloads are CBOR, metadata is JSONB, the schema is owned by Alembic.
"""

from __future__ import annotations

from eventstore.bound import BoundEventStore
from eventstore.codec import CborCodec
from eventstore.errors import (
    AppendOutcomeUnknownError,
    AuthenticationError,
    ConcurrencyError,
    DatabaseNotFoundError,
    DatabaseUnavailableError,
    DeserializationError,
    EventStoreError,
    IntegrationError,
    OperationTimeoutError,
    PermissionDeniedError,
    ProjectionError,
    ProjectionLockedError,
    SchemaError,
    SerializationError,
    ServerError,
    StoreClosedError,
    TooManyConnectionsError,
    TransactionConflictError,
    TransferError,
    ValidationError,
)
from eventstore.feed import Subscription
from eventstore.memory import InMemoryEventStore
from eventstore.postgres import PostgresEventStore
from eventstore.projections import Projection, ProjectionRunner, SkippedEvent
from eventstore.records import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    ExpectedVersion,
    NewEvent,
    Position,
    RecordedEvent,
    Snapshot,
    StreamState,
    VersionedState,
)
from eventstore.registry import EventRegistry
from eventstore.repository import Repository
from eventstore.store import EventStore

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendOutcomeUnknownError",
    "AuthenticationError",
    "BoundEventStore",
    "CborCodec",
    "ConcurrencyError",
    "DatabaseNotFoundError",
    "DatabaseUnavailableError",
    "DeserializationError",
    "EventRegistry",
    "EventStore",
    "EventStoreError",
    "ExpectedVersion",
    "InMemoryEventStore",
    "IntegrationError",
    "NewEvent",
    "OperationTimeoutError",
    "PermissionDeniedError",
    "Position",
    "PostgresEventStore",
    "Projection",
    "ProjectionError",
    "ProjectionLockedError",
    "ProjectionRunner",
    "RecordedEvent",
    "Repository",
    "SchemaError",
    "SerializationError",
    "ServerError",
    "SkippedEvent",
    "Snapshot",
    "StoreClosedError",
    "StreamState",
    "Subscription",
    "TooManyConnectionsError",
    "TransactionConflictError",
    "TransferError",
    "ValidationError",
    "VersionedState",
    "__version__",
]
