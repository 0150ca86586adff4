"""The README's "Using it with Django" section runs as written.

Its ``py`` blocks each start with ``# <file>``: they are written into a fresh
Django project (a settings block is added to a base settings module that reads
the database from ``DATABASE_URL``), its ``sh`` lines are run in that project
(``pip install`` aside), and the project's tests (the README's conftest and test
module) are run by pytest-django. All of it against a scratch database.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from eventstore.urls import normalize_url

README = Path(__file__).resolve().parent.parent / "README.md"

BASE_SETTINGS = """
import os
from urllib.parse import parse_qs, urlsplit

_url = urlsplit(os.environ["DATABASE_URL"])
SECRET_KEY = "not a secret"
USE_TZ = True
ROOT_URLCONF = "urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.path.lstrip("/"),
        "USER": _url.username or "",
        "PASSWORD": _url.password or "",
        "HOST": _url.hostname or parse_qs(_url.query).get("host", [""])[0],
        "PORT": _url.port or parse_qs(_url.query).get("port", [""])[0],
    }
}
"""

MANAGE = """
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
"""

PLACE_AN_ORDER = """
from django.test import Client
response = Client().post(
    "/orders/", {"order_id": "from-the-shell", "total_cents": 700},
    content_type="application/json",
)
assert response.status_code == 201, response.content
"""


def django_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Using it with Django\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", django_section(), flags=re.S)


def test_the_section_has_its_blocks() -> None:
    files = [block.splitlines()[0] for block in blocks("py")]
    for expected in ("# settings.py", "# shop/views.py", "# test_shop.py", "# conftest.py"):
        assert expected in files
    assert "```python" not in django_section()  # the main README test would run them


def write_project(root: Path) -> None:
    (root / "shop").mkdir()
    (root / "shop" / "__init__.py").write_text("")
    (root / "manage.py").write_text(MANAGE)
    (root / "settings.py").write_text(BASE_SETTINGS)
    (root / "pytest.ini").write_text(
        "[pytest]\nDJANGO_SETTINGS_MODULE = settings\n"
        "addopts = -p no:randomly -p no:cacheprovider\n"
    )
    for block in blocks("py"):
        first = block.partition("\n")[0]
        match = re.fullmatch(r"# (\S+\.py)", first)
        assert match, f"a py block of the Django section must start with '# <file>': {first!r}"
        path = root / match.group(1)
        with path.open("a", encoding="utf-8") as file:
            file.write("\n" + block)


def sh_commands() -> list[list[str]]:
    commands = []
    for block in blocks("sh"):
        for line in block.splitlines():
            command = line.partition("#")[0].split()
            if command and command[0] != "pip":
                assert command[:2] == ["python", "manage.py"], line
                commands.append([sys.executable, *command[1:]])
    return commands


def test_the_django_section_runs_as_written(scratch_database_url: str, tmp_path: Path) -> None:
    libpq_url = (
        normalize_url(scratch_database_url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )
    environment = {**os.environ, "DATABASE_URL": libpq_url}
    environment.pop("DJANGO_SETTINGS_MODULE", None)

    def run(command: list[str]) -> str:
        result = subprocess.run(
            command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"{command}:\n{result.stdout}{result.stderr}"
        return result.stdout

    write_project(tmp_path)
    run([sys.executable, "manage.py", "makemigrations", "shop"])  # the project's own migration
    migrate, doctor, project = sh_commands()
    assert "Applying eventstore.0001" in run(migrate)
    assert "overall: pass" in run(doctor)

    # A committed order, then the projection command as written: it runs until SIGTERM.
    run([sys.executable, "manage.py", "shell", "-c", PLACE_AN_ORDER])
    runner = subprocess.Popen(
        project,
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with psycopg.connect(libpq_url, autocommit=True) as database:
            deadline = time.monotonic() + 60
            revenue = None
            while revenue is None and time.monotonic() < deadline and runner.poll() is None:
                revenue = database.execute("SELECT total_cents FROM shop_revenue").fetchone()
                time.sleep(0.1)
        runner.send_signal(signal.SIGTERM)
        output, _ = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert revenue == (700,), output
    assert runner.returncode == 0, output
    assert "revenue: stopped at" in output, output

    tests = run([sys.executable, "-m", "pytest", "-q", "test_shop.py"])
    assert "2 passed" in tests, tests
