"""What a scan may spend (``scan --budget-usd``), and what it has spent.  Pure: prices and answers in, a yes or no
out.

Every chat request is billable, but only an answered one is billed: a 429, a 5xx or a refusal costs nothing.
So the upper bound of one request is its prompt plus ``max_tokens`` at the router's price (USD per million
tokens, input and output), and requests are sent only when the upper bound of all of them fits in what is left
(the big phase in chunks, re-checked between them, so a prompt larger than assumed is learnt early): the
estimate never passes the budget by more than what the first answers (the canaries) teach about the prompt.
Spend is counted per invocation (a resume starts from zero).
Unpriced targets count as free and are counted apart, so the operator sees that the estimate misses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from analysis.pipeline.targets import Target

__all__ = ["PROMPT_TOKENS", "Pricing", "price_of", "request_cost", "Spend", "Budget"]

PROMPT_TOKENS = 20  # our one-line prompt inside a chat template: a generous count

Pricing = Mapping[tuple[str, str], tuple[float, float]]  # (model_id, provider) -> USD per 1M (input, output)


def price_of(pricing: Pricing, model_id: str, provider: str, *, highest: bool = False) -> tuple[float, float] | None:
    """The price of a route.  For the bare route (the router chooses the provider): the cheapest listed provider,
    a fair guess for an estimate, or with ``highest`` the dearest, the bound a budget must assume."""
    price = pricing.get((model_id, provider))
    if price is None and not provider:
        options = [p for (m, _), p in pricing.items() if m == model_id]
        pick = max if highest else min
        price = pick(options, key=lambda p: p[0] + p[1]) if options else None
    return price


def request_cost(price: tuple[float, float], max_tokens: int, prompt_tokens: int = PROMPT_TOKENS) -> float:
    """The most one answered request costs, in USD."""
    return (prompt_tokens * price[0] + max_tokens * price[1]) / 1_000_000


@dataclass
class Spend:
    """What the answers of one invocation cost: the tokens the router reported and the estimated USD.

    An answer with a ``usage`` report costs its tokens at the route's price; one without costs the upper bound,
    so the estimate never reads low.  Refusals cost nothing.  The upper bound of a request is the largest prompt
    an answer has reported so far (at least 20 tokens: the canaries, probed first, show a chat template's real
    size) plus its ``max_tokens`` (a request experiment's own, up to ``--max-tokens-retry``), at the route's
    price (the dearest provider for a bare route).
    """

    pricing: Pricing
    max_tokens: int
    experiment_max_tokens: int = 0  # a request experiment's budget (0: as max_tokens)
    usd: float = 0.0  # the estimate: reported tokens at the price (the upper bound where none were reported)
    # What the budget counts: each answer at the larger of its reported cost and its upper bound.
    counted_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_bound: int = PROMPT_TOKENS  # the largest prompt an answer reported (at least PROMPT_TOKENS)
    answers: int = 0  # billed answers
    unreported: int = 0  # billed answers without a usage report (estimated at the upper bound)
    unpriced: set[str] = field(default_factory=set)  # model strings answered without a price

    def cost(self, model_id: str, provider: str, model_string: str = "", max_tokens: int | None = None) -> float:
        """The most one answered request of this route costs (0 for an unpriced route, which is remembered)."""
        price = price_of(self.pricing, model_id, provider, highest=True)
        if price is None:
            self.unpriced.add(model_string or model_id)
            return 0.0
        return request_cost(price, max_tokens or self.max_tokens, self.prompt_bound)

    def record(self, model_id: str, provider: str, model_string: str, answered: bool,
               usage: tuple[int, int] | None = None, experiment: bool = False) -> None:
        """Count one request: an answered one is billed (its reported tokens, else the upper bound), a refused or
        failed one is not."""
        if not answered:
            return
        self.answers += 1
        if usage is not None:
            self.prompt_bound = max(self.prompt_bound, usage[0])
        bound = self.cost(model_id, provider, model_string,
                          (self.experiment_max_tokens or None) if experiment else None)
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

    def __init__(self, limit_usd: float, pricing: Pricing, max_tokens: int, experiment_max_tokens: int = 0) -> None:
        self.limit_usd = limit_usd
        self.spend = Spend(pricing, max_tokens, experiment_max_tokens)

    @property
    def spent_usd(self) -> float:
        return self.spend.usd

    @property
    def unpriced(self) -> set[str]:
        return self.spend.unpriced

    def upper_bound(self, requests: Iterable[Target], max_tokens: int | None = None) -> float:
        return sum(self.spend.cost(t.model_id, t.provider, t.model_string, max_tokens) for t in requests)

    @property
    def left_usd(self) -> float:
        return max(0.0, self.limit_usd - self.spend.counted_usd)

    def fits(self, requests: Sequence[Target], max_tokens: int | None = None) -> bool:
        """Whether every one of ``requests`` may be sent, each answered at its full price."""
        return self.upper_bound(requests, max_tokens) <= self.left_usd + 1e-12

    def affordable(self, requests: Sequence[Target]) -> int:
        """How many of ``requests``, in order, fit in what is left."""
        total = 0.0
        for count, target in enumerate(requests):
            total += self.spend.cost(target.model_id, target.provider, target.model_string)
            if total > self.left_usd + 1e-12:
                return count
        return len(requests)
