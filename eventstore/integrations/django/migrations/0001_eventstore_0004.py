"""The store's tables at revision eventstore_0004 (the events, snapshots, the feed,
projection checkpoints and skipped events)."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import migrations

from eventstore.integrations.django.operations import UpgradeEventStore


class Migration(migrations.Migration):  # type: ignore[misc]
    initial = True
    dependencies: ClassVar[list[tuple[str, str]]] = []
    operations: ClassVar[list[Any]] = [
        UpgradeEventStore(revision="eventstore_0004", previous="base")
    ]
