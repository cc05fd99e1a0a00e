"""When the SDK resends a failed call: only when the failure says a later try can succeed.

- UNAVAILABLE (a backend or the gateway is down or restarting): exponential backoff with jitter.
- RESOURCE_EXHAUSTED with a ``retry-after-ms`` trailing hint (the gateway shed load): after at least the hint.
- Anything else, including a RESOURCE_EXHAUSTED without the hint (an image over the size limits, too many queries in
  one batch), is final: resending the same request can never succeed.

Attempts and total time are bounded, so a caller under sustained overload gets the refusal back instead of
waiting without limit."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import grpc

RETRY_AFTER_KEY = "retry-after-ms"  # the gateway's hint (server.errors.RETRY_AFTER_KEY; the SDK imports no server)


def retry_after_ms(metadata) -> float | None:
    """The hint in a call's trailing metadata, or None."""
    for key, value in metadata or ():
        if key == RETRY_AFTER_KEY:
            try:
                return float(value)
            except ValueError:
                return None
    return None


@dataclass
class RetryPolicy:
    retries: int = 3  # resends after the first attempt
    max_total_s: float = 10.0  # no resend that would start later than this after the first send
    backoff_s: float = 0.05  # first backoff on UNAVAILABLE, doubled each time
    max_backoff_s: float = 2.0
    rng: random.Random = field(default_factory=random.Random)

    def delay_s(self, code: grpc.StatusCode, trailing_metadata, attempt: int, elapsed_s: float) -> float | None:
        """Seconds to wait before resend number ``attempt + 1``, or None when the failure is final."""
        if attempt >= self.retries:
            return None
        backoff = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        if code == grpc.StatusCode.UNAVAILABLE:
            wait = backoff
        elif code == grpc.StatusCode.RESOURCE_EXHAUSTED and (hint := retry_after_ms(trailing_metadata)) is not None:
            wait = max(hint / 1e3, backoff)
        else:
            return None
        wait *= 1 + 0.5 * self.rng.random()  # jitter: refused callers do not all come back at once
        return wait if elapsed_s + wait <= self.max_total_s else None
