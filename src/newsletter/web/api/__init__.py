"""The admin REST API, `/api/v1`: Bearer tokens, idempotent POSTs, problem+json errors, pydantic responses.

`common.py` holds what every route shares, `idempotency.py` the Idempotency-Key protocol; a module per noun
holds its routes.
"""

from __future__ import annotations

from fastapi import APIRouter

from newsletter.web.api import (
    events,
    issues,
    lists,
    segments,
    sequences,
    subscribers,
    suppressions,
    transfer,
    webhooks,
)

# transfer before subscribers: /subscribers/export and /subscribers/import are not subscriber ids.
ROUTERS: tuple[APIRouter, ...] = (
    transfer.router,
    lists.router,
    subscribers.router,
    issues.router,
    suppressions.router,
    events.router,
    webhooks.router,
    sequences.router,
    segments.router,
)
