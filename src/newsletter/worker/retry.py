"""The one retry policy: exponential backoff with jitter, capped, honouring Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_seconds: float
    max_seconds: float
    max_attempts: int
    # The share of each backoff always waited; the rest is random. 0 (full jitter) spreads retries most; a
    # webhook endpoint that is down waits at least half of it, so that it is not probed again at once.
    floor_share: float = 0.0

    def delay(
        self, attempts: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float | None:
        """Seconds to wait before the next attempt, or None when `attempts` were the last allowed."""
        if attempts >= self.max_attempts:
            return None
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1))
        jittered = (rng or random).uniform(ceiling * self.floor_share, ceiling)
        return max(jittered, retry_after or 0.0)
