"""Rate-limit headroom from response headers.

Understands the de-facto ``X-RateLimit-Limit/-Remaining/-Reset`` family (GitHub, Google
APIs, Twitter...), the IETF draft fields in both their older form (``RateLimit-Limit``,
``RateLimit-Remaining``, ``RateLimit-Reset``) and their structured form
(``RateLimit: "default";r=50;t=30`` with ``RateLimit-Policy: "default";q=100;w=60``), and
``Retry-After`` (seconds or an HTTP date).  Malformed values are ignored, never raised.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

_PARAM = re.compile(r";\s*([a-z]+)\s*=\s*(\d+(?:\.\d+)?)", re.I)
MAX_HEADER = 512


@dataclass(frozen=True)
class RateLimit:
    limit: float | None = None
    remaining: float | None = None
    reset_seconds: float | None = None

    def __bool__(self) -> bool:
        return self.limit is not None or self.remaining is not None or self.reset_seconds is not None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    value = value.strip()[:MAX_HEADER]
    # "100, 100;w=60" (draft-03 allows a list): the first number is the active quota.
    head = value.split(",", 1)[0].split(";", 1)[0].strip()
    try:
        number = float(head)
    except ValueError:
        return None
    return number if number >= 0 and math.isfinite(number) else None


def _reset(value: float | None, now: float) -> float | None:
    if value is None:
        return None
    # Epoch seconds (GitHub) vs delta seconds (IETF): anything past 2001 is a timestamp.
    return max(0.0, value - now) if value > 1_000_000_000 else value


def _retry_after(value: str | None, now: float) -> float | None:
    if value is None:
        return None
    number = _number(value)
    if number is not None:
        return number
    try:
        when = parsedate_to_datetime(value.strip()[:MAX_HEADER])
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when.timestamp() - now)


def parse(get: Callable[[str], str | None], now: float | None = None) -> RateLimit:
    """Read rate-limit state through ``get(header_name)`` (case-insensitive lookup)."""
    now = time.time() if now is None else now
    limit = _number(get("x-ratelimit-limit")) or _number(get("ratelimit-limit"))
    remaining = _number(get("x-ratelimit-remaining"))
    if remaining is None:
        remaining = _number(get("ratelimit-remaining"))
    reset = _reset(_number(get("x-ratelimit-reset")), now)
    if reset is None:
        reset = _reset(_number(get("ratelimit-reset")), now)
    structured = get("ratelimit")
    if structured:
        params = {k.lower(): float(v) for k, v in _PARAM.findall(structured[:MAX_HEADER])}
        remaining = params.get("r", remaining)
        reset = params.get("t", reset)
    policy = get("ratelimit-policy")
    if policy and limit is None:
        params = {k.lower(): float(v) for k, v in _PARAM.findall(policy[:MAX_HEADER])}
        limit = params.get("q", _number(policy))
    retry = _retry_after(get("retry-after"), now)
    if retry is not None and reset is None:
        reset = retry
    return RateLimit(limit, remaining, reset)
