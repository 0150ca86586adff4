"""``manage.py migrate`` on a fresh database makes the store's tables; doctor passes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from django.conf import settings

HERE = Path(__file__).resolve().parent.parent


def manage(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=HERE,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_migrate_on_a_fresh_database_then_doctor_passes() -> None:
    default = settings.DATABASES["default"]
    server = {
        "user": default["USER"],
        "password": default["PASSWORD"],
        "host": default["HOST"],
        "port": default["PORT"],
    }
    name = f"django_orders_fresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = urlsplit(settings.DATABASE_URL)._replace(path=f"/{name}").geturl()
        migrated = manage("migrate", database_url=url)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        doctor = manage("eventstore", "doctor", database_url=url)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "overall: pass" in doctor.stdout
        with psycopg.connect(dbname=name, **server) as fresh:
            tables = fresh.execute(
                "SELECT to_regclass('events'), to_regclass('orders_order')"
            ).fetchone()
        assert tables == ("events", "orders_order")
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
