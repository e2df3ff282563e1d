"""Metadata database: the source of truth for assets (SQLite or PostgreSQL)."""
