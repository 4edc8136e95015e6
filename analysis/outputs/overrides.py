"""Operator overrides of the blocklist: ``allow`` a model the scan blocks, or ``block`` one it does not.  Pure.

An override is stored with who made it, when, and why (``override add``), and is applied by every export, the
dashboard and the reports alike.  One that has expired stops applying, and the exports say so.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

__all__ = ["OVERRIDE_COLUMNS", "active", "expired", "apply_overrides", "describe"]

OVERRIDE_COLUMNS = ["id", "model_id", "provider", "action", "reason", "author", "created_at", "expires_at"]


def _expired(expires_at: object, now: datetime) -> bool:
    if not isinstance(expires_at, str) or not expires_at:
        return False
    when = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when <= now


def active(overrides: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """The overrides in force at ``now``."""
    if overrides.empty:
        return overrides
    return overrides[[not _expired(e, now) for e in overrides["expires_at"]]].reset_index(drop=True)


def expired(overrides: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """The overrides that have expired by ``now`` (no longer applied)."""
    if overrides.empty:
        return overrides
    return overrides[[_expired(e, now) for e in overrides["expires_at"]]].reset_index(drop=True)


def describe(row: dict | pd.Series) -> str:
    """``allow: <reason> (by <author> on <date>[, until <date>])``."""
    until = f", until {row['expires_at']}" if isinstance(row.get("expires_at"), str) and row["expires_at"] else ""
    return f"{row['action']}: {row['reason']} (by {row['author']} on {str(row['created_at'])[:10]}{until})"


def apply_overrides(findings: pd.DataFrame, overrides: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """``findings`` with the overrides in force applied to ``blocked``, and an ``override`` column saying which.

    An override without a provider covers every provider of the model; a later one wins over an earlier one.
    Predicted rows are left alone: a prediction never blocks, whatever an override says.
    """
    out = findings.copy()
    out["override"] = [None] * len(out)
    rules = active(overrides, now)
    if out.empty or rules.empty:
        return out
    predicted = out["predicted"].astype(bool) if "predicted" in out else pd.Series(False, index=out.index)
    for rule in rules.to_dict("records"):
        match = (out["model_id"] == rule["model_id"]) & ~predicted
        if rule["provider"]:
            match &= out["provider"] == rule["provider"]
        out.loc[match, "blocked"] = rule["action"] == "block"
        out.loc[match, "override"] = describe(rule)
    return out
