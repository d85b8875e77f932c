"""Errors the services raise; the web layer turns each into its HTTP status."""

from __future__ import annotations


class NotFound(LookupError):
    pass


class Conflict(RuntimeError):
    """The request cannot apply to the resource in its current state."""


class Invalid(ValueError):
    """The request's values cannot be used; the message says which and why."""
