"""What every check shares: a finding (:class:`Check`), the overall status, and what
the database checks run on (:class:`Session`, :class:`DatabaseCheck`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import psycopg.errors
import sqlalchemy.exc
from sqlalchemy import Connection

from eventstore import migrations
from eventstore._catalog import column_exists
from eventstore._translate import first_line
from eventstore.roles import STORE_COLUMN_PRIVILEGES, STORE_PRIVILEGES

Status = Literal["pass", "warn", "fail"]

EXIT_CODES: dict[Status, int] = {"pass": 0, "warn": 1, "fail": 2}
"""The ``eventstore doctor`` exit code for each overall status."""

_RANK: dict[Status, int] = {"pass": 0, "warn": 1, "fail": 2}

GRANT_ADVICE = (
    "as the tables' owner, grant the application's user what the store needs: "
    + " ".join(
        f"GRANT {rights} ON {table} TO <user>;" for table, rights in STORE_PRIVILEGES.items()
    )
    + " "
    + " ".join(
        f"GRANT {right} ({column}) ON {table} TO <user>;"
        for table, (right, column) in STORE_COLUMN_PRIVILEGES.items()
    )
    + " and, for `eventstore doctor` and `migrate current`: GRANT SELECT ON "
    + f"{migrations.VERSION_TABLE} TO <user>;"
)
"""The advice of a check whose query the database refused for lack of a privilege."""


@dataclass(frozen=True)
class Check:
    """One finding: ``status`` is ``"pass"``, ``"warn"`` or ``"fail"``; ``message``
    says what was found, ``advice`` what to do about it (empty when nothing)."""

    name: str
    status: Status
    message: str
    advice: str = ""

    def to_dict(self) -> dict[str, str]:
        """The check as JSON-ready data: ``name``, ``status``, ``message``, ``advice``."""
        return {
            "name": self.name,
            "status": self.status,
            "message": self.message,
            "advice": self.advice,
        }


def overall(checks: Sequence[Check]) -> Status:
    """The worst status among ``checks`` (``"pass"`` for none)."""
    worst: Status = "pass"
    for check in checks:
        if _RANK[check.status] > _RANK[worst]:
            worst = check.status
    return worst


@dataclass
class Session:
    """What the database checks share: the open connection (autocommit, with lock and
    statement timeouts), the command's options, and the findings so far."""

    connection: Connection
    pool: int
    """The most connections the application opens."""
    max_transaction_age: float
    """Seconds a transaction may run before ``oldest transaction`` warns."""
    findings: list[Check] = field(default_factory=list)
    """What the database checks found so far, in order."""

    @property
    def at_head(self) -> bool:
        """The ``migration`` check passed: the schema is at the newest revision."""
        return any(c.name == "migration" and c.status == "pass" for c in self.findings)

    @cached_property
    def has_feed(self) -> bool:
        """``events`` has the feed's columns (revision eventstore_0002); asked once."""
        return column_exists(self.connection, "events", "transaction_id")


Findings = Check | list[Check]
"""What a database check returns: one finding, or several (one per setting, say)."""


def always(session: Session) -> bool:
    """The condition of a check that runs on every database."""
    return True


@dataclass(frozen=True)
class DatabaseCheck:
    """An entry of the ordered list of database checks: ``run`` (whose docstring
    documents the check) when ``applies``; a query the database refuses fails the
    check under ``name`` instead of stopping the others."""

    name: str
    run: Callable[[Session], Findings]
    applies: Callable[[Session], bool] = always

    def __call__(self, session: Session) -> list[Check]:
        """The check's findings on ``session`` (none when it does not apply)."""
        if not self.applies(session):
            return []
        try:
            found = self.run(session)
        except sqlalchemy.exc.DBAPIError as error:
            message = first_line(error)
            if isinstance(error.orig, psycopg.errors.InsufficientPrivilege):
                return [Check(self.name, "fail", message, GRANT_ADVICE)]
            return [Check(self.name, "fail", f"the check's query failed: {message}")]
        return [found] if isinstance(found, Check) else found
