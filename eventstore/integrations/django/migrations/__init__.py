"""Django migrations of the app: each runs the library's Alembic revisions up to one revision."""
