"""Settings of the order service: the database comes from DATABASE_URL."""

import os
from urllib.parse import parse_qs, unquote, urlsplit

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@localhost:5432/django_orders")


def database(url: str) -> dict[str, object]:
    """DATABASES["default"] for a postgres:// or postgresql:// URL (a unix socket
    directory as ``?host=/path``; other query options go to libpq)."""
    parts = urlsplit(url)
    options = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or options.pop("host", ""),
        "PORT": parts.port or options.pop("port", ""),
        "OPTIONS": options,
    }


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "only-for-the-example")
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "orders_site.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "eventstore.integrations.django",
    "orders",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES = {"default": database(DATABASE_URL)}
EVENTSTORE = {"DATABASE": "default", "REGISTRY": "orders.events:registry"}
