"""Per-provider rate control: answers in, limits out.

A pure unit (no I/O, no asyncio; the clock is injected) that the probe layer asks
before each request (:meth:`RateController.delay`) and tells after each answer
(:meth:`RateController.on_answer`).  Every provider is its own key (the route's
provider; a bare route is the key ``"(bare)"``) with its own concurrency limit and
request rate:

- **Slow start.** A provider starts with ``initial_concurrency`` requests in flight
  and no pacing; each answer that is not a refusal adds one (so the limit doubles
  per round trip) up to the global ceiling.
- **Multiplicative decrease** on a *provider signal*: a 429 that is provider-wide
  (429s to at least two different models within ``window`` seconds, or a 429 whose
  ``RateLimit`` / ``x-ratelimit-remaining`` header says the budget is spent), or a
  burst of 5xx (``burst_5xx`` different models within ``window``, at least half the
  provider's answers there).  The rate becomes ``decrease`` times the goodput the
  provider actually delivered over the last ``window`` (the best estimate of its
  limit; the requested rate if that is lower), never below ``floor``; the
  concurrency is multiplied by ``decrease``.  One decrease per round: answers to
  requests sent before the last decrease do not cut again.  A lone model's 429 is
  that model's own answer, not a throughput signal: it counts against its retries
  as before.
- **Additive increase**: once paced, every answer that is not a refusal raises the
  rate by ``increase / rate`` (so about ``increase`` requests/s per second) and the
  concurrency by ``1 / concurrency``.
- **Headers.** ``Retry-After`` (up to ``retry_after_cap``) pauses the provider for
  that long; a longer one is that model's verdict and never pauses the provider.
  ``RateLimit: "api";r=<left>;t=<seconds>`` (the Hub's) and
  ``x-ratelimit-remaining`` / ``x-ratelimit-reset`` (passed through from
  providers): a spent budget pauses the provider until the reset (up to the cap), a
  small one paces it at ``left / seconds``.
- **Free retries.** A 429 that was a provider signal while the provider's rate was
  above its floor was caused by probing too fast: :attr:`Decision.free_retry` says
  the retry should not count against ``--retries`` (at most ``max_free_retries``
  per request, so nothing loops).  At the floor, 429s count again, and a provider
  whose last ``refusing_after`` answers at its floor were all 429s is *refusing*:
  its pacing is lifted so that it finishes at full speed with real ``rate_limited``
  verdicts, until an answer shows it serving again.
- **Pins.** ``pinned`` rates (``--rate P=N``) are fixed: no slow start on the rate,
  no AIMD; 429s there count.

:func:`parse_rate_pins` parses ``P=N`` pins for the CLI; :func:`default_concurrency` is
the global ceiling's default for a scope of N providers.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

__all__ = [
    "BARE_KEY",
    "Decision",
    "Limits",
    "RateController",
    "default_concurrency",
    "parse_rate_pins",
    "provider_key",
]

BARE_KEY = "(bare)"
_RATELIMIT_FIELD = re.compile(r"(?:^|[;,\s])([rt])\s*=\s*([0-9.]+)")
_NUMBER = r"(\d+(?:\.\d+)?)"
# Go-style durations, as providers pass through in x-ratelimit-reset-*: "1s", "6m0s", "20ms", "1h2m".
_DURATION = re.compile(rf"^\s*(?:{_NUMBER}h)?(?:{_NUMBER}m(?!s))?(?:{_NUMBER}s)?(?:{_NUMBER}ms)?\s*$")


def provider_key(provider: str) -> str:
    """The rate-control key of a route: its provider, or :data:`BARE_KEY` when the router chooses."""
    return provider or BARE_KEY


def default_concurrency(providers: int, per_provider: int = 8, cap: int = 256) -> int:
    """The default global ceiling: ``per_provider`` requests in flight for each provider in scope, at most ``cap``.

    Each provider's own limit (slow start, AIMD) decides how much of it that provider uses; the ceiling only
    keeps a scan of many providers from being as narrow as a scan of one.
    """
    return max(per_provider, min(cap, per_provider * max(1, providers)))


def parse_rate_pins(specs: Iterable[str]) -> dict[str, float]:
    """``["together=5", "hf-inference=2.5"]`` -> ``{"together": 5.0, "hf-inference": 2.5}``.

    ``bare=N`` (or ``(bare)=N``) pins the bare route.  Raises :class:`ValueError`
    with a message naming the bad item (the CLI maps it to exit 2).
    """
    pins: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"a rate pin is PROVIDER=REQUESTS_PER_SECOND, e.g. together=5 (got {spec!r})")
        try:
            rate = float(value)
        except ValueError:
            raise ValueError(f"the rate in {spec!r} is not a number") from None
        if not 0 < rate < math.inf:
            raise ValueError(f"the rate in {spec!r} must be a finite number of requests per second > 0")
        pins[BARE_KEY if name in ("bare", BARE_KEY) else name] = rate
    return pins


@dataclass(frozen=True)
class Limits:
    """What one provider may do right now."""

    concurrency: int
    rate: float | None  # requests per second; None: not paced
    paused_until: float
    at_floor: bool
    refusing: bool
    pinned: bool


@dataclass(frozen=True)
class Decision:
    """What the controller makes of one answer."""

    signal: bool  # a provider-wide refusal (429 or 5xx burst): the limits went down (or were already cut)
    free_retry: bool  # the controller caused this 429: retry without counting it against the retries


@dataclass
class _Provider:
    concurrency: float
    rate: float | None = None
    pinned: bool = False
    slow_start: bool = True
    in_flight: int = 0
    next_send_at: float = 0.0
    paused_until: float = 0.0
    decreased_at: float = -math.inf
    successes: deque[float] = field(default_factory=deque)  # answer times of non-refusals
    refusals_429: deque[tuple[float, str]] = field(default_factory=deque)
    errors_5xx: deque[tuple[float, str]] = field(default_factory=deque)
    answers: deque[float] = field(default_factory=deque)
    floor_429_streak: int = 0
    refusing: bool = False
    latency_ewma: float | None = None


class RateController:
    """Per-provider concurrency and rate, adapted from the answers (see the module docstring)."""

    def __init__(self, ceiling: int, *, floor: float = 1.0, pinned: Mapping[str, float] | None = None,
                 clock: Callable[[], float] = time.monotonic, initial_concurrency: int = 8,
                 decrease: float = 0.7, increase: float = 1.0, window: float = 1.0, burst_5xx: int = 3,
                 retry_after_cap: float = 30.0, max_free_retries: int = 6, refusing_after: int = 10) -> None:
        self.ceiling = max(1, ceiling)
        self.floor = floor
        self.pins = {provider_key(k) if k != BARE_KEY else k: v for k, v in (pinned or {}).items()}
        self.clock = clock
        self.initial_concurrency = max(1, min(initial_concurrency, self.ceiling))
        self.decrease = decrease
        self.increase = increase
        self.window = window
        self.burst_5xx = burst_5xx
        self.retry_after_cap = retry_after_cap
        self.max_free_retries = max_free_retries
        self.refusing_after = refusing_after
        self._providers: dict[str, _Provider] = {}

    # -- state

    def _get(self, key: str) -> _Provider:
        state = self._providers.get(key)
        if state is None:
            pin = self.pins.get(key)
            if pin is not None:
                state = _Provider(concurrency=float(self.ceiling), rate=pin, pinned=True, slow_start=False)
            else:
                state = _Provider(concurrency=float(self.initial_concurrency))
            self._providers[key] = state
        return state

    def limits(self, key: str) -> Limits:
        s = self._get(key)
        return Limits(concurrency=self._concurrency(s), rate=None if s.refusing else s.rate,
                      paused_until=s.paused_until, at_floor=self._at_floor(s), refusing=s.refusing, pinned=s.pinned)

    def latency(self, key: str) -> float | None:
        """The provider's smoothed answer time in seconds (None before its first answer)."""
        return self._get(key).latency_ewma

    def in_flight(self, key: str) -> int:
        return self._get(key).in_flight

    def _concurrency(self, s: _Provider) -> int:
        return max(1, min(self.ceiling, int(s.concurrency)))

    def _at_floor(self, s: _Provider) -> bool:
        return s.rate is not None and s.rate <= self.floor * 1.0001

    # -- before a request

    def delay(self, key: str) -> float:
        """Seconds until ``key`` may send its next request: 0 now, ``inf`` until an answer frees a slot."""
        s = self._get(key)
        if s.in_flight >= self._concurrency(s):
            return math.inf
        now = self.clock()
        wait = s.paused_until - now
        if s.rate is not None and not s.refusing:
            wait = max(wait, s.next_send_at - now)
        return max(0.0, wait)

    def on_send(self, key: str) -> float:
        """Record a request sent now; returns its send time (hand it back to :meth:`on_answer`)."""
        s = self._get(key)
        now = self.clock()
        s.in_flight += 1
        if s.rate is not None and not s.refusing:
            s.next_send_at = max(s.next_send_at, now) + 1.0 / s.rate
        return now

    # -- after an answer

    def on_answer(self, key: str, model: str, status: int | None, headers: Mapping[str, str] | None = None,
                  sent_at: float | None = None, latency_s: float | None = None, free_used: int = 0) -> Decision:
        """Adapt ``key``'s limits to one answer (``status`` None: no HTTP answer; ``headers`` lower-case)."""
        s = self._get(key)
        now = self.clock()
        sent_at = now if sent_at is None else sent_at
        s.in_flight = max(0, s.in_flight - 1)
        headers = headers or {}
        if latency_s is not None and status is not None:
            s.latency_ewma = latency_s if s.latency_ewma is None else 0.8 * s.latency_ewma + 0.2 * latency_s
        self._expire(s, now)
        s.answers.append(now)
        decision = Decision(signal=False, free_retry=False)
        if status == 429:
            decision = self._on_429(s, model, headers, sent_at, now, free_used)
        elif status is not None and status >= 500:
            s.errors_5xx.append((now, model))
            burst = {m for _, m in s.errors_5xx}
            if len(burst) >= self.burst_5xx and 2 * len(s.errors_5xx) >= len(s.answers):
                self._cut(s, sent_at, now)
                decision = Decision(signal=True, free_retry=False)
        elif status is not None:
            self._serving(s, now)
        # Last: what the headers say about the budget overrides what the pace alone suggested.
        self._apply_headers(s, headers, now)
        return decision

    def on_cancel(self, key: str) -> None:
        """A request that ended without an answer to learn from (cancelled)."""
        s = self._get(key)
        s.in_flight = max(0, s.in_flight - 1)

    def _expire(self, s: _Provider, now: float) -> None:
        horizon = now - self.window
        for queue in (s.successes, s.answers):
            while queue and queue[0] < horizon:
                queue.popleft()
        for pairs in (s.refusals_429, s.errors_5xx):
            while pairs and pairs[0][0] < now - 2 * self.window:
                pairs.popleft()

    def _serving(self, s: _Provider, now: float) -> None:
        """An answer that is not a refusal: the provider serves at this pace; grow."""
        s.successes.append(now)
        s.floor_429_streak = 0
        if s.refusing:
            s.refusing = False
            s.rate = max(self.floor, len(s.successes) / self.window)
        if s.pinned:
            return
        if s.slow_start:
            s.concurrency = min(float(self.ceiling), s.concurrency + 1.0)
        else:
            s.concurrency = min(float(self.ceiling), s.concurrency + 1.0 / max(1.0, s.concurrency))
        if s.rate is not None:
            s.rate += self.increase / max(s.rate, 1.0)

    def _on_429(self, s: _Provider, model: str, headers: Mapping[str, str], sent_at: float, now: float,
                free_used: int) -> Decision:
        retry_after = _seconds(headers.get("retry-after"))
        if retry_after is not None and retry_after > self.retry_after_cap:
            # That model's own verdict: never stall the provider for it, never call it a throughput signal.
            return Decision(signal=False, free_retry=False)
        s.refusals_429.append((now, model))
        spent = _budget_spent(headers)
        distinct = {m for _, m in s.refusals_429}
        if not (spent or len(distinct) >= 2 or retry_after is not None):
            return Decision(signal=False, free_retry=False)  # a lone model's refusal: its own answer
        if s.pinned:
            return Decision(signal=True, free_retry=False)
        if s.refusing:
            return Decision(signal=True, free_retry=False)
        above_floor = not self._at_floor(s)
        if self._at_floor(s):
            s.floor_429_streak += 1
            if s.floor_429_streak >= self.refusing_after and not s.successes:
                s.refusing = True  # refuses whatever the pace: finish at full speed, the 429s count
                s.concurrency = float(self.ceiling)
        self._cut(s, sent_at, now)
        return Decision(signal=True, free_retry=above_floor and free_used < self.max_free_retries)

    def _cut(self, s: _Provider, sent_at: float, now: float) -> None:
        if s.pinned or sent_at < s.decreased_at:
            return  # sent before the last cut: that cut already answered for it
        goodput = len(s.successes) / self.window
        current = s.rate if s.rate is not None else math.inf
        s.rate = max(self.floor, self.decrease * min(current, goodput))
        s.concurrency = max(1.0, s.concurrency * self.decrease)
        s.slow_start = False
        s.decreased_at = now
        # Start the new pace after a pause of one window: a sliding-window limiter refuses until the burst ages out.
        s.next_send_at = max(s.next_send_at, now + min(self.window, 1.0 / s.rate))

    def _apply_headers(self, s: _Provider, headers: Mapping[str, str], now: float) -> None:
        retry_after = _seconds(headers.get("retry-after"))
        if retry_after is not None and retry_after <= self.retry_after_cap:
            s.paused_until = max(s.paused_until, now + retry_after)
        left, reset = _remaining(headers)
        if left is None or reset is None or reset > self.retry_after_cap:
            return
        if left <= 0:
            s.paused_until = max(s.paused_until, now + reset)
        elif reset > 0 and not s.pinned:
            budget = left / reset
            if budget < self.ceiling / max(s.latency_ewma or 1.0, 1e-3) and (s.rate is None or budget < s.rate):
                s.rate = max(self.floor, budget)
                s.slow_start = False


def _seconds(value: str | None) -> float | None:
    """A delay in seconds from ``Retry-After``-like text: ``"2"``, ``"0.5"``, ``"1s"``, ``"6m0s"``, ``"20ms"``,
    or an HTTP date / epoch seconds, taken relative to now."""
    if value is None:
        return None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        match = _DURATION.match(text)
        if match and any(match.groups()):
            h, m, sec, ms = (float(g) if g else 0.0 for g in match.groups())
            return h * 3600 + m * 60 + sec + ms / 1000
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    if number > 1e9:  # an epoch timestamp, as some providers send for x-ratelimit-reset
        return max(0.0, number - time.time())
    return max(0.0, number)


def _remaining(headers: Mapping[str, str]) -> tuple[float | None, float | None]:
    """(requests left, seconds to reset) from ``RateLimit`` or ``x-ratelimit-remaining``/``-reset``."""
    combined = headers.get("ratelimit")
    if combined:
        fields = dict(_RATELIMIT_FIELD.findall(combined))
        if "r" in fields:
            return float(fields["r"]), float(fields["t"]) if "t" in fields else None
    left = headers.get("x-ratelimit-remaining") or headers.get("x-ratelimit-remaining-requests")
    if left is None:
        return None, None
    try:
        remaining = float(left)
    except ValueError:
        return None, None
    return remaining, _seconds(headers.get("x-ratelimit-reset") or headers.get("x-ratelimit-reset-requests"))


def _budget_spent(headers: Mapping[str, str]) -> bool:
    left, _ = _remaining(headers)
    return left is not None and left <= 0
