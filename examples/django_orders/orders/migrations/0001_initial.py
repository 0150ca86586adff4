from typing import Any, ClassVar

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    # The store's tables come with the eventstore app's migration.
    dependencies: ClassVar[list[tuple[str, str]]] = [("eventstore", "0001_eventstore_0004")]
    operations: ClassVar[list[Any]] = [
        migrations.CreateModel(
            name="Order",
            fields=[
                ("order_id", models.CharField(max_length=64, primary_key=True, serialize=False)),
                ("customer", models.CharField(max_length=100)),
                ("total_cents", models.IntegerField()),
                ("status", models.CharField(max_length=20)),
                ("version", models.IntegerField()),
            ],
        ),
        migrations.CreateModel(
            name="CustomerTotal",
            fields=[
                ("customer", models.CharField(max_length=100, primary_key=True, serialize=False)),
                ("orders", models.IntegerField()),
                ("total_cents", models.BigIntegerField()),
            ],
        ),
    ]
