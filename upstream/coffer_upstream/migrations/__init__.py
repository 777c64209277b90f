"""Alembic's migrations of the upstream's schema, shipped inside the package."""
