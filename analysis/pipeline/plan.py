"""The cost plan of a scan (``scan --plan``): what a scan would send and what it would cost, with no chat request.
Pure: the catalog and the previous run's probes come in, a :class:`ScanPlan` comes out.

Every probe is a billable call.  The plan counts the requests a scan expects (one probe per target, the
canaries from outside the catalog, and the route checks, request experiments and retries at the rates the
previous run of the same scope observed), prices them with the router's ``/v1/models`` pricing (USD per
million tokens, input and output; unpriced targets are counted and shown as such) and estimates the duration
from the concurrency and the observed median latency.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import pandas as pd

from analysis.pipeline.budget import PROMPT_TOKENS, Pricing, price_of, request_cost
from analysis.pipeline.targets import Target

__all__ = ["PROMPT_TOKENS", "DEFAULT_LATENCY_S", "ScanPlan", "build_plan"]

DEFAULT_LATENCY_S = 1.0  # without an earlier run: most answers take about a second


@dataclass(frozen=True)
class ScanPlan:
    """What a scan would do, before it does it."""

    targets: int
    models: int
    providers: list[str]
    canaries: int
    requests: dict[str, float]  # expected requests by kind
    priced_targets: int
    unpriced_targets: int
    cost_usd: float
    duration_s: float
    basis: str  # where the rates come from
    unpriced_examples: list[str] = field(default_factory=list)

    @property
    def total_requests(self) -> float:
        return sum(self.requests.values())

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["total_requests"] = round(self.total_requests, 1)
        return data

    def lines(self) -> list[str]:
        """The plan as text, one item per line."""
        kinds = ", ".join(f"{name} {value:,.0f}" for name, value in self.requests.items() if value)
        unpriced = (f"; {self.unpriced_targets} targets have no price in the router's list (not counted"
                    + (f", e.g. {', '.join(self.unpriced_examples)}" if self.unpriced_examples else "") + ")"
                    if self.unpriced_targets else "")
        return [
            f"plan: {self.targets} targets ({self.models} models, providers: {', '.join(self.providers) or '-'}), "
            f"{self.canaries} canaries",
            f"  requests expected: {self.total_requests:,.0f} ({kinds})",
            f"  estimated cost: ${self.cost_usd:.6f} for {self.priced_targets} priced targets{unpriced}",
            f"  estimated duration: {self.duration_s:,.0f} s",
            f"  rates: {self.basis}; no chat request was sent and no run was created",
        ]


def _rates(previous: pd.DataFrame | None) -> tuple[dict[str, float], float, str]:
    """Per target: route checks, experiments, rechecks and retries seen in the previous run, and its median
    latency in seconds."""
    if previous is None or previous.empty or not (previous["kind"] == "primary").any():
        return {}, DEFAULT_LATENCY_S, "no earlier run of this scope: probes only, 1 s per answer"
    primary = previous[previous["kind"] == "primary"]
    n = len(primary)
    rates = {
        "route_checks": float((previous["kind"] == "route").sum()) / n,
        "experiments": float((previous["kind"] == "experiment").sum()) / n,
        "rechecks": float(previous["kind"].isin(["canary_recheck", "majority_recheck"]).sum()) / n,
        "retries": float((pd.to_numeric(previous["attempts"], errors="coerce").fillna(1) - 1).clip(lower=0).sum())
        / n,
    }
    latency = pd.to_numeric(primary["latency_ms"], errors="coerce").dropna()
    median = float(latency.median()) / 1000 if len(latency) else DEFAULT_LATENCY_S
    return rates, median or DEFAULT_LATENCY_S, "observed in the previous run of this scope"


def build_plan(catalog: pd.DataFrame, targets: Sequence[Target], canaries: dict[str, list[Target]], *,
               pricing: Pricing, max_tokens: int, concurrency: int,
               previous: pd.DataFrame | None = None) -> ScanPlan:
    """The plan for probing ``targets`` at the router's ``pricing`` (``previous``: the last successful run's
    probes, for the rates)."""
    keys = {(t.model_id, t.provider) for t in targets}
    outside = sum(1 for group in canaries.values() for c in group if (c.model_id, c.provider) not in keys)
    rates, latency_s, basis = _rates(previous)
    per_target = 1 + sum(rates.values())
    cost = 0.0
    priced = 0
    unpriced: list[str] = []
    for target in targets:
        price = price_of(pricing, target.model_id, target.provider)
        if price is None:
            unpriced.append(target.model_string)
            continue
        priced += 1
        cost += per_target * request_cost(price, max_tokens)
    requests = {"probes": float(len(targets)), "canaries": float(outside),
                **{name: rate * len(targets) for name, rate in rates.items()}}
    total = sum(requests.values())
    duration = math.ceil(total / max(1, concurrency)) * latency_s
    return ScanPlan(targets=len(targets), models=len({t.model_id for t in targets}),
                    providers=sorted({t.provider or "(router's choice)" for t in targets}),
                    canaries=sum(len(group) for group in canaries.values()), requests=requests,
                    priced_targets=priced, unpriced_targets=len(unpriced), cost_usd=cost,
                    duration_s=round(duration, 1), basis=basis, unpriced_examples=unpriced[:3])
