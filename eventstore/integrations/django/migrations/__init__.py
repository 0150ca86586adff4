"""Django migrations of the app: each upgrades the store's tables to one library revision.

When the library gains a revision (``alembic/versions/eventstore_000N_*.py``), add
the Django migration that brings it, ``00KK_eventstore_000N.py``::

    class Migration(migrations.Migration):
        dependencies = [("eventstore", "<the previous Django migration>")]
        operations = [
            UpgradeEventStore(revision="eventstore_000N", previous="eventstore_000M")
        ]

where ``eventstore_000M`` is the revision the previous Django migration upgrades
to. ``tests/test_django_integration.py`` fails until the last Django migration
upgrades to the library's head. See
:class:`eventstore.integrations.django.operations.UpgradeEventStore`.
"""
