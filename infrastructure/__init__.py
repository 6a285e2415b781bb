"""Adapters: SQLAlchemy storage, settings, the command line."""
