"""One retry policy for both runners: transient errors retry with backoff, others fail."""

from __future__ import annotations

from dataclasses import dataclass

from rq import Retry


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    intervals: tuple[int, ...] = (10, 60, 300)  # seconds before retry 1, 2, 3

    def delay(self, retry_number: int) -> int:
        """Seconds to wait before retry ``retry_number`` (1-based)."""
        return self.intervals[min(retry_number, len(self.intervals)) - 1]

    def for_rq(self) -> Retry:
        return Retry(max=self.max_retries, interval=list(self.intervals))


DEFAULT_POLICY = RetryPolicy()
