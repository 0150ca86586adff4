"""The Repository on the paths applications take: appends with ``ANY`` while other
writers append to the same stream, snapshots that cannot be encoded or saved, and
snapshots inside the caller's transaction.

Runs against both stores where the path exists.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg
import pytest
from _faults import THREAD_DEADLINE_SECONDS, libpq_url
from _store_helpers import STORE_KINDS, store_for

from eventstore import (
    ANY,
    STREAM_EXISTS,
    ConcurrencyError,
    DatabaseUnavailableError,
    EventStore,
    NewEvent,
    PostgresEventStore,
    Repository,
    SerializationError,
)

ROUNDS = 50
APPENDS_PER_WRITER = 6


def fold(state: tuple[str, ...], event: Any) -> tuple[str, ...]:
    """The state is the list of every event's label, in stream order."""
    return (*state, event.data["label"])


def labelled(label: str) -> NewEvent:
    return NewEvent("Labelled", {"label": label})


def replayed(store: EventStore, stream_id: str) -> tuple[tuple[str, ...], int]:
    """The true state: every event folded from the start, no snapshot."""
    state: tuple[str, ...] = ()
    version = 0
    for event in store.load_events(stream_id):
        state, version = fold(state, event), event.version
    return state, version


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> EventStore:
    result: EventStore = store_for(request, request.param)
    return result


# -- item 6: ANY and STREAM_EXISTS snapshot the true state ---------------------------------------


def test_any_appends_racing_another_writer_snapshot_and_return_the_true_state(
    store: EventStore,
) -> None:
    """One thread appends through the Repository with ``ANY`` (snapshotting every
    two events), another appends to the same stream directly; after every round
    ``load`` (snapshot + tail) equals a full replay, and every state ``append``
    returned equals the replay up to the version it returned."""
    repository = Repository(store, (), fold, snapshot_every=2)
    wrong_states: list[tuple[int, Any, Any]] = []
    wrong_returns: list[tuple[int, int]] = []
    for round_number in range(ROUNDS):
        stream_id = f"race-{round_number}"
        store.append_events(stream_id, [labelled("seed")], expected_version=0)
        returned = race_round(store, repository, stream_id)
        wrong_returns += [
            (round_number, version)
            for state, version in returned
            if state != replayed_at(store, stream_id, version)
        ]
        loaded = repository.load(stream_id)
        truth = replayed(store, stream_id)
        assert truth[1] == 1 + 2 * APPENDS_PER_WRITER
        if loaded != truth:
            wrong_states.append((round_number, loaded, truth))
    assert wrong_states == [], f"{len(wrong_states)} of {ROUNDS} rounds loaded a wrong state"
    assert wrong_returns == [], f"{len(wrong_returns)} appends returned a wrong state"


def race_round(
    store: EventStore, repository: Repository[tuple[str, ...]], stream_id: str
) -> list[tuple[tuple[str, ...], int]]:
    """The two writers of one round; what the Repository's appends returned."""
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    returned: list[tuple[tuple[str, ...], int]] = []

    def through_repository() -> None:
        try:
            barrier.wait(THREAD_DEADLINE_SECONDS)
            state, _ = repository.load(stream_id)
            for n in range(APPENDS_PER_WRITER):
                state, version = repository.append(
                    stream_id, [labelled(f"r{n}")], state=state, expected_version=ANY
                )
                returned.append((state, version))
                time.sleep(0)  # let the other writer in (the in-memory store holds the GIL)
        except BaseException as exc:
            errors.append(exc)

    def directly() -> None:
        try:
            barrier.wait(THREAD_DEADLINE_SECONDS)
            for n in range(APPENDS_PER_WRITER):
                store.append_events(stream_id, [labelled(f"d{n}")], expected_version=ANY)
                time.sleep(0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=through_repository), threading.Thread(target=directly)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_DEADLINE_SECONDS)
    assert not errors, errors
    return returned


def replayed_at(store: EventStore, stream_id: str, version: int) -> tuple[str, ...]:
    return tuple(event.data["label"] for event in store.load_events(stream_id, to_version=version))


def test_stream_exists_folds_the_events_another_writer_appended(store: EventStore) -> None:
    repository = Repository(store, (), fold, snapshot_every=3)
    state, version = repository.append("exists-1", [labelled("a")], state=(), expected_version=0)
    store.append_events("exists-1", [labelled("other")], expected_version=version)

    state, version = repository.append(
        "exists-1", [labelled("b"), labelled("c")], state=state, expected_version=STREAM_EXISTS
    )

    assert (state, version) == (("a", "other", "b", "c"), 4)
    snapshot = store.load_snapshot("exists-1")
    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (4, ("a", "other", "b", "c"))
    assert repository.load("exists-1") == replayed(store, "exists-1")


def test_stream_exists_on_a_missing_stream_writes_nothing(store: EventStore) -> None:
    repository = Repository(store, (), fold, snapshot_every=1)
    with pytest.raises(ConcurrencyError) as raised:
        repository.append("missing", [labelled("a")], state=(), expected_version=STREAM_EXISTS)
    assert (raised.value.expected, raised.value.actual) == (STREAM_EXISTS, 0)
    assert store.stream_version("missing") == 0


# -- item 7: a snapshot that cannot be encoded or saved ------------------------------------------


class Unencodable:
    """Not registered: the codec refuses it."""


def test_an_unencodable_state_fails_before_anything_is_appended(store: EventStore) -> None:
    def evolve(state: dict[str, Any], event: Any) -> dict[str, Any]:
        if event.data.get("poison"):
            return {**state, "handle": Unencodable()}
        return {**state, "n": state["n"] + 1}

    repository = Repository(store, {"n": 0}, evolve, snapshot_every=2)
    state, version = repository.append(
        "poisoned", [NewEvent("Fine", {})], state={"n": 0}, expected_version=0
    )
    for expected in (version, ANY):
        with pytest.raises(SerializationError):
            repository.append(
                "poisoned",
                [NewEvent("Poison", {"poison": True})],
                state=state,
                expected_version=expected,
            )
        assert store.stream_version("poisoned") == 1  # the natural retry cannot duplicate
    assert store.load_snapshot("poisoned") is None


def test_a_snapshot_that_cannot_be_saved_after_the_append_is_logged_not_raised(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    """The events are committed; the snapshot is only a cache. A failing save
    (here: the snapshot table locked past ``lock_timeout``) must not make the
    call fail, or the caller's retry would store the events twice."""
    event_store: PostgresEventStore = request.getfixturevalue("event_store")
    url = request.getfixturevalue("eventstore_database_url")
    store = PostgresEventStore.from_url(url, lock_timeout=0.2)
    try:
        repository = Repository(store, (), fold, snapshot_every=2)
        state, version = repository.append("locked", [labelled("a")], state=(), expected_version=0)
        with psycopg.connect(libpq_url(url)) as locker:
            locker.execute("LOCK TABLE snapshots IN EXCLUSIVE MODE")
            with caplog.at_level(logging.WARNING, logger="eventstore"):
                state, version = repository.append(
                    "locked", [labelled("b")], state=state, expected_version=version
                )
        assert (state, version) == (("a", "b"), 2)
        assert [e.data["label"] for e in event_store.load_events("locked")] == ["a", "b"]
        assert event_store.load_snapshot("locked") is None
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "locked" in warnings[0].getMessage()
        assert repository.load("locked") == (("a", "b"), 2)
    finally:
        store.close()


def test_a_lost_snapshot_save_in_memory_is_logged_not_raised(
    in_memory_event_store: EventStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = in_memory_event_store

    def unavailable(*args: Any, **kwargs: Any) -> bool:
        raise DatabaseUnavailableError("connection lost")

    repository = Repository(store, (), fold, snapshot_every=1)
    monkeypatch.setattr(store, "save_snapshot", unavailable)
    with caplog.at_level(logging.WARNING, logger="eventstore"):
        assert repository.append("m", [labelled("a")], state=(), expected_version=0) == (("a",), 1)
        assert repository.append("m", [labelled("b")], state=("a",), expected_version=ANY) == (
            ("a", "b"),
            2,
        )
    assert store.stream_version("m") == 2
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_a_failing_snapshot_inside_the_callers_transaction_leaves_it_usable(
    event_store: PostgresEventStore, eventstore_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    repository = Repository(event_store, (), fold, snapshot_every=2)
    with psycopg.connect(libpq_url(eventstore_database_url)) as locker:
        locker.execute("LOCK TABLE snapshots IN EXCLUSIVE MODE")
        with (
            caplog.at_level(logging.WARNING, logger="eventstore"),
            event_store.engine.begin() as connection,
        ):
            connection.exec_driver_sql("SET LOCAL lock_timeout = '200ms'")
            state, version = repository.append(
                "unit",
                [labelled("a"), labelled("b")],
                state=(),
                expected_version=0,
                connection=connection,
            )
            assert (state, version) == (("a", "b"), 2)
            # The transaction is still usable: more work, then a commit.
            state, version = repository.append(
                "unit",
                [labelled("c")],
                state=state,
                expected_version=version,
                connection=connection,
            )
    assert [e.data["label"] for e in event_store.load_events("unit")] == ["a", "b", "c"]
    assert event_store.load_snapshot("unit") is None
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert repository.load("unit") == (("a", "b", "c"), 3)


def test_any_after_losing_a_race_reloads_even_with_an_evolve_that_mutates_in_place(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A racing writer gets in between the Repository's load and its append:
    the append is retried on a fresh load, so an ``evolve`` that changed the
    loaded state in place does not leak the first attempt into the result."""

    def evolve_in_place(state: dict[str, list[str]], event: Any) -> dict[str, list[str]]:
        state["labels"].append(event.data["label"])
        return state

    repository = Repository(store, lambda: {"labels": []}, evolve_in_place, snapshot_every=2)
    store.append_events("mutating", [labelled("a")], expected_version=0)
    real_append = store.append_events
    raced: list[bool] = []

    def append_after_a_racer(stream_id: str, events: Any, **kwargs: Any) -> int:
        if not raced:
            raced.append(True)
            real_append(stream_id, [labelled("racer")], expected_version=ANY)
        return real_append(stream_id, events, **kwargs)

    monkeypatch.setattr(store, "append_events", append_after_a_racer)
    state, version = repository.append(
        "mutating", [labelled("mine")], state={"labels": []}, expected_version=ANY
    )
    assert (state, version) == ({"labels": ["a", "racer", "mine"]}, 3)
    monkeypatch.undo()
    assert repository.load("mutating") == ({"labels": ["a", "racer", "mine"]}, 3)
