"""Integrations with web frameworks: optional extras, imported only on demand."""
