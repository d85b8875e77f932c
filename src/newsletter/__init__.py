"""A self-hosted newsletter service on PostgreSQL."""

__version__ = "0.1.0"
