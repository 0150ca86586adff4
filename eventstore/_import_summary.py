"""What an import did: the records :func:`eventstore.transfer.import_events` returns
and :class:`eventstore.errors.TransferError` carries. Imports nothing of the
package, so the errors at the bottom of it can name them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RefusedStream:
    """A stream in the file that the import left alone, and why."""

    stream_id: str
    first_version: int
    """The stream's first version in the file."""
    last_version: int
    """The stream's last version in the file."""
    target_version: int
    """The stream's version in the target when it was refused."""

    @property
    def reason(self) -> str:
        """Why the stream was refused, in words."""
        if self.target_version >= self.first_version:
            overlap = min(self.target_version, self.last_version)
            return (
                f"the target already has versions {self.first_version}..{overlap} "
                f"(it is at version {self.target_version})"
            )
        return (
            f"the target is at version {self.target_version} and the file starts at "
            f"{self.first_version}: versions {self.target_version + 1}.."
            f"{self.first_version - 1} would be missing"
        )


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_events` did.

    ``events``, ``streams`` and ``snapshots`` count what was inserted.
    ``refused_streams`` counts the streams left alone; ``refused`` lists them (the
    first 1000). ``ok`` is true when nothing was refused.
    """

    events: int
    streams: int
    snapshots: int
    seconds: float
    refused_streams: int = 0
    refused_events: int = 0
    refused: tuple[RefusedStream, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every stream of the file was imported."""
        return self.refused_streams == 0
