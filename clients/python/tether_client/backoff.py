"""Exponential backoff with full jitter.

The delay before retry number ``n`` (0-based) is ``uniform(0, min(cap, base * 2**n))``
("full jitter": spreads a crowd of clients that lost the same node over the whole window
instead of letting them reconnect in lockstep).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# 2**64 * any sane base is far above any cap; beyond it the bound is the cap anyway, and
# float(2**1024) would overflow.
_MAX_EXPONENT = 64


@dataclass
class Backoff:
    base: float = 0.25
    cap: float = 10.0
    max_attempts: int | None = None  # None: retry forever
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.base <= 0:
            raise ValueError("base must be positive")
        if self.cap < self.base:
            raise ValueError("cap must be at least base")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError("max_attempts must be >= 0 or None")

    def bound(self, attempt: int) -> float:
        """Upper end of the delay window for retry number ``attempt`` (0-based)."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        if attempt >= _MAX_EXPONENT:
            return self.cap
        return min(self.cap, self.base * float(2**attempt))

    def delay(self, attempt: int) -> float:
        """A random delay in ``[0, bound(attempt)]``."""
        return self.rng.uniform(0.0, self.bound(attempt))

    def allows(self, attempt: int) -> bool:
        """Whether retry number ``attempt`` (0-based) may still be made."""
        return self.max_attempts is None or attempt < self.max_attempts
