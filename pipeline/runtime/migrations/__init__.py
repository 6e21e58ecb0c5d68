"""Alembic migrations of the dropship database (``dropship db upgrade``)."""
