"""History across runs and the persistent-failure policy.  Pure: frames in, frames out.

History is computed over the *successful* runs of one scope (same source and
provider spec), oldest first.  A failing run is one whose reason is not ``ok``;
predicted (metadata-only) verdicts are not evidence and are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from analysis.schema import HISTORY_COLUMNS
from analysis.taxonomy import TRANSIENT, reason_info

__all__ = ["HISTORY_COLUMNS", "PersistencePolicy", "summarise_history", "apply_persistence", "newly_blocked",
           "expected_seconds"]

# Reasons that may add up to a persistent failure.  persistent_failure itself
# counts, so a blocked model stays blocked until it answers again.
_STREAK_REASONS = TRANSIENT | {"persistent_failure"}


@dataclass(frozen=True)
class PersistencePolicy:
    """A transient reason blocks after ``after`` consecutive failing runs spanning ``min_hours``.

    A run in which more than ``outage_share`` of the targets failed transiently
    is an upstream outage (or a broken route), not evidence about any one
    model: it neither promotes nor counts towards a streak.
    """

    after: int = 3
    min_hours: float = 12.0
    flap_window: int = 10
    outage_share: float = 0.5


def _outage_runs(previous: pd.DataFrame, share: float) -> set[int]:
    if previous.empty:
        return set()
    transient = previous["reason"].isin(_STREAK_REASONS)
    shares = transient.groupby(previous["run_id"]).mean()
    run_ids: list[Any] = list(shares.index)  # ints from the store; Any for the type checker's sake
    return {int(run_id) for run_id, value in zip(run_ids, shares.tolist()) if value > share}


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(str(ts).replace("Z", "+00:00"))


def summarise_history(history: pd.DataFrame, flap_window: int = 10) -> pd.DataFrame:
    """Per (model_id, provider): ``first_failed_at``, ``last_ok_at``, ``consecutive_failures``, ``flaps``.

    ``history`` has one row per (run, model, provider) with ``run_id``,
    ``run_started_at``, ``model_id``, ``provider`` and ``reason``.
    ``first_failed_at`` is the start of the current failing streak (empty when
    the latest verdict is ok); ``flaps`` counts verdict changes in the last
    ``flap_window`` runs.
    """
    columns = ["model_id", "provider", *HISTORY_COLUMNS, "runs_seen"]
    if history.empty:
        return pd.DataFrame(columns=columns)
    ordered = history.sort_values(["model_id", "provider", "run_id"])
    # Runs of equal keys over plain lists: a pandas groupby hands out one sub-frame per
    # model, which cost ~35 us each (0.7 s on 20,000 models).
    model_ids, providers = ordered["model_id"].tolist(), ordered["provider"].tolist()
    all_reasons, all_started = ordered["reason"].tolist(), ordered["run_started_at"].tolist()
    rows = []
    start, n = 0, len(model_ids)
    while start < n:
        end = start + 1
        while end < n and model_ids[end] == model_ids[start] and providers[end] == providers[start]:
            end += 1
        reasons, started = all_reasons[start:end], all_started[start:end]
        streak = 0
        for reason in reversed(reasons):
            if reason == "ok":
                break
            streak += 1
        last_ok = next((started[i] for i in range(len(reasons) - 1, -1, -1) if reasons[i] == "ok"), None)
        first_failed = started[len(reasons) - streak] if streak else None
        window = reasons[-flap_window:]
        flaps = sum(1 for a, b in zip(window, window[1:]) if a != b)
        rows.append((model_ids[start], providers[start], first_failed, last_ok, streak, flaps, len(reasons)))
        start = end
    return pd.DataFrame(rows, columns=columns)


def apply_persistence(findings: pd.DataFrame, previous: pd.DataFrame, run_started_at: str,
                      policy: PersistencePolicy = PersistencePolicy()) -> pd.DataFrame:
    """Turn long-lasting transient verdicts into ``persistent_failure`` (blocked).

    ``previous`` holds the earlier successful runs' verdicts in the same scope
    (columns as for :func:`summarise_history`).  A finding becomes
    ``persistent_failure`` when its reason is transient, the ``after - 1`` runs
    before it failed transiently too, and the first of those ``after`` runs
    started at least ``min_hours`` before this one.  One ``ok`` clears it.
    Outage runs (see :class:`PersistencePolicy`) are left out on both sides.
    """
    out = findings.copy()
    if out.empty or policy.after < 1:
        return out
    if out["reason"].isin(TRANSIENT).mean() > policy.outage_share:
        return out  # this run is an outage: nothing here says a given model is broken
    outages = _outage_runs(previous, policy.outage_share)
    previous = previous[~previous["run_id"].isin(outages)] if outages else previous
    prev_by_key: dict[tuple[str, str], list[tuple[str, str]]] = {}
    if not previous.empty:
        ordered = previous.sort_values("run_id")
        for model_id, provider, reason, started in zip(ordered["model_id"], ordered["provider"], ordered["reason"],
                                                       ordered["run_started_at"]):
            prev_by_key.setdefault((model_id, provider), []).append((reason, started))
    now = _parse(run_started_at)
    info = reason_info("persistent_failure")
    for idx, model_id, provider, reason in zip(out.index, out["model_id"].tolist(), out["provider"].tolist(),
                                               out["reason"].tolist()):
        if reason not in TRANSIENT or out.at[idx, "predicted"]:
            continue
        past = prev_by_key.get((model_id, provider), [])
        needed = policy.after - 1
        tail = past[-needed:] if needed else []
        if len(tail) < needed or any(r not in _STREAK_REASONS for r, _ in tail):
            continue
        first_started = _parse(tail[0][1]) if tail else now
        hours = (now - first_started).total_seconds() / 3600
        if hours < policy.min_hours:
            continue
        earlier_note = str(out.at[idx, "note"] or "")
        out.at[idx, "note"] = "; ".join(x for x in (
            f"{reason} in {policy.after} consecutive runs over {hours:.1f} h", earlier_note) if x)
        out.at[idx, "detail"] = f"persistent {reason}: {out.at[idx, 'detail']!s}"
        out.at[idx, "reason"] = "persistent_failure"
        out.at[idx, "blocked"] = info.blocked
        out.at[idx, "action"] = info.action
        out.at[idx, "message"] = info.message.format(model=model_id)
    return out


def newly_blocked(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """``model_id, provider, reason`` of the targets ``after`` blocks that ``before`` (a successful run) did not."""
    was = set(zip(before["model_id"][before["blocked"]], before["provider"][before["blocked"]]))
    now = after[after["blocked"].astype(bool)]
    keep = pd.Series([(m, p) not in was for m, p in zip(now["model_id"], now["provider"])], index=now.index,
                     dtype=bool)
    return now[keep][["model_id", "provider", "reason"]].reset_index(drop=True)


def expected_seconds(times: pd.DataFrame) -> dict[str, float]:
    """Model string -> the seconds its probe held a worker in an earlier run (last attempt's latency x attempts).

    Only an ordering hint for the next scan (slowest first): a model that timed out three times took three
    timeouts, and will most likely do so again.  ``times`` has ``model_string``, ``latency_ms`` and ``attempts``
    (:meth:`analysis.store.base.Store.probe_times`).
    """
    return {str(route): float(ms) / 1000.0 * (int(attempts) if _number(attempts) and attempts >= 1 else 1)
            for route, ms, attempts in zip(times["model_string"], times["latency_ms"], times["attempts"])
            if _number(ms)}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and value == value  # NaN is the one value unequal to itself
