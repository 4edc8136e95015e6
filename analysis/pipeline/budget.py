"""What a scan may spend (``scan --budget-usd``), and what it has spent.  Pure: prices and answers in, a yes or no
out.

Every chat request is billable, but only an answered one is billed: a 429, a 5xx or a refusal costs nothing.
So the upper bound of one request is its prompt plus ``max_tokens`` at the router's price (USD per million
tokens, input and output), and a phase is started only when the upper bound of all its requests fits in what is
left: the estimate never passes the budget.  Spend is counted per invocation (a resume starts from zero).
Unpriced targets count as free and are counted apart, so the operator sees that the estimate misses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from analysis.pipeline.targets import Target

__all__ = ["PROMPT_TOKENS", "Pricing", "price_of", "request_cost", "Spend", "Budget"]

PROMPT_TOKENS = 20  # our one-line prompt inside a chat template: a generous count

Pricing = Mapping[tuple[str, str], tuple[float, float]]  # (model_id, provider) -> USD per 1M (input, output)


def price_of(pricing: Pricing, model_id: str, provider: str) -> tuple[float, float] | None:
    """The price of a route; for the bare route (the router chooses), the cheapest listed provider."""
    price = pricing.get((model_id, provider))
    if price is None and not provider:
        options = [p for (m, _), p in pricing.items() if m == model_id]
        price = min(options, key=lambda p: p[0] + p[1]) if options else None
    return price


def request_cost(price: tuple[float, float], max_tokens: int) -> float:
    """The most one answered request costs, in USD."""
    return (PROMPT_TOKENS * price[0] + max_tokens * price[1]) / 1_000_000


@dataclass
class Spend:
    """What the answers of one invocation cost: the tokens the router reported and the estimated USD.

    An answer with a ``usage`` report costs its tokens at the route's price; one without costs the upper bound
    (20 prompt tokens and ``max_tokens``), so the estimate never reads low.  Refusals cost nothing.
    """

    pricing: Pricing
    max_tokens: int
    usd: float = 0.0  # the estimate: reported tokens at the price (the upper bound where none were reported)
    # What the budget counts: each answer at the larger of its reported cost and its upper bound, so that a long
    # chat template (more than 20 prompt tokens) can never carry the spend past a budget the phases were sized to.
    counted_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    answers: int = 0  # billed answers
    unreported: int = 0  # billed answers without a usage report (estimated at the upper bound)
    unpriced: set[str] = field(default_factory=set)  # model strings answered without a price

    def cost(self, model_id: str, provider: str, model_string: str = "") -> float:
        """The most one answered request of this route costs (0 for an unpriced route, which is remembered)."""
        price = price_of(self.pricing, model_id, provider)
        if price is None:
            self.unpriced.add(model_string or model_id)
            return 0.0
        return request_cost(price, self.max_tokens)

    def record(self, model_id: str, provider: str, model_string: str, answered: bool,
               usage: tuple[int, int] | None = None) -> None:
        """Count one request: an answered one is billed (its reported tokens, else the upper bound), a refused or
        failed one is not."""
        if not answered:
            return
        self.answers += 1
        bound = self.cost(model_id, provider, model_string)
        if usage is None:
            self.unreported += 1
            self.usd += bound
            self.counted_usd += bound
            return
        self.prompt_tokens += usage[0]
        self.completion_tokens += usage[1]
        price = price_of(self.pricing, model_id, provider)
        reported = 0.0 if price is None else (usage[0] * price[0] + usage[1] * price[1]) / 1_000_000
        self.usd += reported
        self.counted_usd += max(reported, bound)


class Budget:
    """The spending limit of one invocation over its :class:`Spend`."""

    def __init__(self, limit_usd: float, pricing: Pricing, max_tokens: int) -> None:
        self.limit_usd = limit_usd
        self.spend = Spend(pricing, max_tokens)

    @property
    def spent_usd(self) -> float:
        return self.spend.usd

    @property
    def unpriced(self) -> set[str]:
        return self.spend.unpriced

    def upper_bound(self, requests: Iterable[Target]) -> float:
        return sum(self.spend.cost(t.model_id, t.provider, t.model_string) for t in requests)

    @property
    def left_usd(self) -> float:
        return max(0.0, self.limit_usd - self.spend.counted_usd)

    def fits(self, requests: Sequence[Target]) -> bool:
        """Whether every one of ``requests`` may be sent, each answered at its full price."""
        return self.upper_bound(requests) <= self.left_usd + 1e-12

    def affordable(self, requests: Sequence[Target]) -> int:
        """How many of ``requests``, in order, fit in what is left."""
        total = 0.0
        for count, target in enumerate(requests):
            total += self.spend.cost(target.model_id, target.provider, target.model_string)
            if total > self.left_usd + 1e-12:
                return count
        return len(requests)

    def record(self, model_id: str, provider: str, model_string: str, answered: bool,
               usage: tuple[int, int] | None = None) -> None:
        self.spend.record(model_id, provider, model_string, answered, usage)
