"""Snapshots that never lie: a Repository uses a snapshot only when it was saved at
its own ``snapshot_version`` and decodes; otherwise it rebuilds the aggregate from
its events, and the next snapshot it saves replaces the one it ignored. Both stores.

The cross-process case is the one applications meet: version-1 classes write the
events and the snapshot in one process (a subprocess here, on PostgreSQL), the
changed classes read them in another. The in-memory store lives in one process,
so there the same store is read through a codec with the changed classes.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from dataclasses import dataclass, replace
from typing import Any

import cbor2
import pytest
from _store_helpers import STORE_KINDS

from eventstore import (
    ANY,
    EventRegistry,
    InMemoryEventStore,
    PostgresEventStore,
    Repository,
    ValidationError,
)
from eventstore.codec import CborCodec
from eventstore.records import VersionedState

# -- the application's classes, version 2 of CartState ---------------------------------


@dataclass(frozen=True)
class ItemAdded:
    sku: str


@dataclass(frozen=True)
class CartState:
    items: tuple[str, ...] = ()
    on_sale: int = 0  # added in version 2, with a default: old snapshots still decode


def evolve(state: CartState, event: Any) -> CartState:
    if isinstance(event, ItemAdded):
        return replace(
            state,
            items=(*state.items, event.sku),
            on_sale=state.on_sale + event.sku.startswith("sale-"),
        )
    return state


class SeenEvents(list[Any]):
    """The events an ``evolve`` was given: a Repository built with :meth:`evolve`
    shows how many it folded."""

    def evolve(self, state: CartState, event: Any) -> CartState:
        self.append(event)
        return evolve(state, event)


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register(ItemAdded)
    registry.register(CartState)
    return registry


# -- what version 1 wrote ---------------------------------------------------------------

V1_WRITER = textwrap.dedent(
    """
    import sys
    from dataclasses import dataclass, replace

    from eventstore import EventRegistry, PostgresEventStore, Repository

    registry = EventRegistry()


    @registry.register
    @dataclass(frozen=True)
    class ItemAdded:
        sku: str


    @registry.register
    @dataclass(frozen=True)
    class CartState:
        items: tuple = ()


    def evolve(state, event):
        return replace(state, items=(*state.items, event.sku))


    with PostgresEventStore.from_url(sys.argv[1], registry=registry) as store:
        carts = Repository(store, CartState, evolve, snapshot_every=2)
        state, version = carts.load("cart-1")
        for sku in sys.argv[2:]:
            state, version = carts.append(
                "cart-1", [ItemAdded(sku)], state=state, expected_version=version
            )
    """
)

V1_SKUS = ["sale-1", "plain-1", "plain-2"]
"""Version 1 snapshots after the second event (snapshot_every=2), at version 2."""


def written_by_version_1(store: Any, database_url: str) -> Any:
    """The store after version-1 code appended :data:`V1_SKUS` to ``cart-1`` with a
    Repository snapshotting every 2 events, read with version 2's classes."""
    if isinstance(store, PostgresEventStore):
        done = subprocess.run(
            [sys.executable, "-c", V1_WRITER, database_url, *V1_SKUS],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return store

    v1 = EventRegistry()

    @v1.register(name="ItemAdded")
    @dataclass(frozen=True)
    class ItemAddedV1:
        sku: str

    @v1.register(name="CartState")
    @dataclass(frozen=True)
    class CartStateV1:
        items: tuple[str, ...] = ()

    def evolve_v1(state: CartStateV1, event: ItemAddedV1) -> CartStateV1:
        return replace(state, items=(*state.items, event.sku))

    written = InMemoryEventStore(registry=v1)
    carts = Repository(written, CartStateV1, evolve_v1, snapshot_every=2)
    state, version = carts.load("cart-1")
    for sku in V1_SKUS:
        state, version = carts.append(
            "cart-1", [ItemAddedV1(sku)], state=state, expected_version=version
        )
    written.codec = CborCodec(store.registry)  # what a process with version 2 reads
    return written


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Any:
    if request.param == "postgres":
        return request.getfixturevalue("event_store")
    return request.getfixturevalue("in_memory_event_store")


@pytest.fixture
def database_url(request: pytest.FixtureRequest, store: Any) -> str:
    if isinstance(store, PostgresEventStore):
        return str(request.getfixturevalue("eventstore_database_url"))
    return ""


def replayed(store: Any, stream_id: str) -> tuple[CartState, int]:
    """The state a full replay of the stream's events gives."""
    state, version = CartState(), 0
    for event in store.load_events(stream_id):
        state, version = evolve(state, event.data), event.version
    return state, version


# -- a snapshot of an older shape -------------------------------------------------------


def test_a_version_1_snapshot_decodes_with_the_new_field_defaulted_and_lies(
    store: Any, database_url: str
) -> None:
    """The trap: the old snapshot decodes (the new field has a default), so without
    a snapshot version bump the Repository uses it and gets the state wrong."""
    old = written_by_version_1(store, database_url)
    snapshot = old.load_snapshot("cart-1")
    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (2, CartState(("sale-1", "plain-1"), 0))

    state, version = Repository(old, CartState, evolve, snapshot_version=1).load("cart-1")

    assert (state, version) != replayed(old, "cart-1")
    assert state.on_sale == 0


def test_after_a_snapshot_version_bump_the_old_snapshot_is_ignored_and_the_state_is_right(
    store: Any, database_url: str
) -> None:
    old = written_by_version_1(store, database_url)
    seen = SeenEvents()

    carts = Repository(old, CartState, seen.evolve, snapshot_version=2)
    state, version = carts.load("cart-1")

    assert (state, version) == replayed(old, "cart-1")
    assert state == CartState(("sale-1", "plain-1", "plain-2"), 1)
    assert len(seen) == 3  # rebuilt from the first event
    _, current = carts.append(  # ANY loads the current state too: the same rule
        "cart-1", [ItemAdded("sale-2")], state=CartState(), expected_version=ANY
    )
    assert carts.load("cart-1")[0].on_sale == 2
    assert current == 4


def test_the_next_snapshot_replaces_the_stale_one_at_the_new_version(
    store: Any, database_url: str
) -> None:
    old = written_by_version_1(store, database_url)
    seen = SeenEvents()

    carts = Repository(old, CartState, seen.evolve, snapshot_every=2, snapshot_version=2)
    state, version = carts.load("cart-1")  # version 3, stale snapshot at 2
    state, version = carts.append(
        "cart-1", [ItemAdded("sale-2")], state=state, expected_version=version
    )

    snapshot = old.load_snapshot("cart-1")
    assert snapshot is not None
    assert snapshot.version == 4
    assert snapshot.state == VersionedState(
        2, CartState(("sale-1", "plain-1", "plain-2", "sale-2"), 2)
    )
    seen.clear()
    assert carts.load("cart-1") == (state, 4) == replayed(old, "cart-1")
    assert seen == []  # loaded from the new snapshot alone


def test_a_snapshot_of_another_snapshot_version_is_ignored_either_way(store: Any) -> None:
    """Code at snapshot version 1 (a rollback, an older instance in a rolling deploy)
    ignores version 2's snapshots, and version 3 ignores version 2's."""
    newer = Repository(store, CartState, evolve, snapshot_every=2, snapshot_version=2)
    state, version = newer.load("cart-1")
    for sku in ("sale-1", "plain-1"):
        state, version = newer.append(
            "cart-1", [ItemAdded(sku)], state=state, expected_version=version
        )
    store.append_events("cart-1", [ItemAdded("sale-2")], expected_version=2)
    saved = store.load_snapshot("cart-1")
    assert saved is not None
    assert isinstance(saved.state, VersionedState)
    assert saved.state.version == 2

    for snapshot_version in (1, 3):
        older = Repository(store, CartState, evolve, snapshot_version=snapshot_version)
        assert older.load("cart-1") == replayed(store, "cart-1")
    assert newer.load("cart-1") == replayed(store, "cart-1")


def test_at_snapshot_version_1_the_state_is_stored_as_it_always_was(store: Any) -> None:
    carts = Repository(store, CartState, evolve, snapshot_every=1, snapshot_version=1)

    state, version = carts.append(
        "cart-1", [ItemAdded("sale-1")], state=CartState(), expected_version=0
    )

    snapshot = store.load_snapshot("cart-1")
    assert snapshot is not None
    assert snapshot.state == state == CartState(("sale-1",), 1)  # no VersionedState
    assert Repository(store, CartState, evolve).load("cart-1") == (state, version)


@pytest.mark.parametrize("value", [0, -1, "2", 1.5, True, None])
def test_snapshot_version_is_an_int_of_at_least_1(store: Any, value: Any) -> None:
    with pytest.raises(ValidationError, match="snapshot_version"):
        Repository(store, CartState, evolve, snapshot_version=value)


# -- a snapshot that cannot be decoded ------------------------------------------------


UNDECODABLE = cbor2.CBORTag(27, ["CartState", {"bogus": 1}])
"""A snapshot state naming CartState with a field it does not have."""


def with_an_undecodable_snapshot(store: Any) -> None:
    store.append_events("cart-1", [ItemAdded("sale-1"), ItemAdded("plain-1")], expected_version=0)
    assert store.save_snapshot("cart-1", 2, UNDECODABLE) is True


def test_an_undecodable_snapshot_is_ignored_with_a_warning_and_the_aggregate_loads(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with_an_undecodable_snapshot(store)
    carts = Repository(store, CartState, evolve)

    with caplog.at_level(logging.WARNING, logger="eventstore.repository"):
        loaded = carts.load("cart-1")

    assert loaded == (CartState(("sale-1", "plain-1"), 1), 2) == replayed(store, "cart-1")
    (record,) = [r for r in caplog.records if r.name == "eventstore.repository"]
    assert record.levelno == logging.WARNING
    assert "'cart-1'" in record.getMessage()
    assert "bogus" in record.getMessage()  # the reason
    assert "rebuilt from its events" in record.getMessage()


def test_an_any_append_over_an_undecodable_snapshot_folds_the_events(store: Any) -> None:
    with_an_undecodable_snapshot(store)
    carts = Repository(store, CartState, evolve)

    state, version = carts.append(
        "cart-1", [ItemAdded("sale-2")], state=CartState(), expected_version=ANY
    )

    assert (state, version) == (CartState(("sale-1", "plain-1", "sale-2"), 2), 3)


def test_the_next_snapshot_replaces_an_undecodable_one(store: Any) -> None:
    """Its save is at the version the append reached, past the kept snapshot, so the
    store's "a snapshot as new or newer is kept" rule never keeps the bad one."""
    with_an_undecodable_snapshot(store)
    carts = Repository(store, CartState, evolve, snapshot_every=2)
    state, version = carts.load("cart-1")

    state, version = carts.append(
        "cart-1", [ItemAdded("a"), ItemAdded("b")], state=state, expected_version=version
    )

    snapshot = store.load_snapshot("cart-1")
    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (4, state)
    assert carts.load("cart-1") == (state, 4) == replayed(store, "cart-1")


def test_deleting_the_undecodable_snapshot_stops_the_warnings(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with_an_undecodable_snapshot(store)
    carts = Repository(store, CartState, evolve)

    assert store.delete_snapshot("cart-1") is True
    with caplog.at_level(logging.WARNING, logger="eventstore.repository"):
        assert carts.load("cart-1") == replayed(store, "cart-1")

    assert [r for r in caplog.records if r.name == "eventstore.repository"] == []
