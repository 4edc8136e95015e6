"""Run notifications (``scan --notify URL``): what changed, as one JSON message a chat webhook can show.  Pure.

A message is built on transitions only (a run-level failure that is new, models newly blocked, recovered,
new route or request fixes), or always with ``always=True``.  Its ``text`` field is what Slack and Mattermost
incoming webhooks display: upstream text in it is escaped (``&``, ``<``, ``>``), so no ``<!channel>``-style
mention or link can be smuggled in, and control characters are shown escaped.  Sending is the CLI's (the edge).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis.outputs.views import top_causes
from analysis.pipeline.history import newly_blocked
from analysis.schema import Run
from analysis.untrusted import terminal_line

__all__ = ["FIX_REASONS", "build_message", "slack_escape"]

FIX_REASONS = ("route_mismatch", "probe_error")


def slack_escape(text: Any) -> str:
    """Text safe in a Slack/Mattermost message: one line, ``& < >`` escaped (no mention, no link markup)."""
    return terminal_line(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _keys(frame: pd.DataFrame, mask: pd.Series) -> set[tuple[str, str]]:
    return set(zip(frame["model_id"][mask], frame["provider"][mask]))


def build_message(run: Run, findings: pd.DataFrame, previous: pd.DataFrame | None,
                  previous_run: Run | None, *, app_url: str | None = None,
                  always: bool = False) -> dict[str, Any] | None:
    """The message for ``run`` against the previous run of its scope, or ``None`` when nothing changed."""
    run_id = int(run.id)
    link = f"{app_url.rstrip('/')}/?run={run_id}" if app_url else None
    if run.status == "failed":
        repeated = (previous_run is not None and previous_run.status == "failed"
                    and previous_run.failure_reason == run.failure_reason)
        if repeated and not always:
            return None
        text = (f"Catalog RCA run {run_id} FAILED at run level ({slack_escape(run.failure_reason)}): "
                f"{slack_escape(str(run.failure_message or '')[:300])}. Nothing was blocked.")
        return {"text": text + (f" {link}" if link else ""), "run_id": run_id, "status": "failed",
                "failure_reason": run.failure_reason, "link": link}
    before = previous if previous is not None else findings.iloc[0:0]
    blocked_now = newly_blocked(before, findings)
    was_failing = _keys(before, before["reason"] != "ok") if len(before) else set()
    recovered = sorted(k for k in _keys(findings, findings["reason"] == "ok") if k in was_failing)
    fixes_before = _keys(before, before["reason"].isin(FIX_REASONS)) if len(before) else set()
    new_fixes = sorted(_keys(findings, findings["reason"].isin(FIX_REASONS)) - fixes_before)
    if not (len(blocked_now) or recovered or new_fixes or always or run.status == "partial"):
        return None
    causes = top_causes(findings, top=3)
    lines = [f"Catalog RCA run {run_id} ({run.status}): {len(blocked_now)} newly blocked, {len(recovered)} "
             f"recovered, {len(new_fixes)} new route or request fixes; {int(findings['blocked'].sum())} blocked in "
             f"all."]
    for row in blocked_now.head(10).itertuples(index=False):
        lines.append(f"- blocked: {slack_escape(row.model_id)} {slack_escape(row.provider)} ({row.reason})")
    for model_id, provider in recovered[:10]:
        lines.append(f"- recovered: {slack_escape(model_id)} {slack_escape(provider)}")
    for model_id, provider in new_fixes[:10]:
        lines.append(f"- fix: {slack_escape(model_id)} {slack_escape(provider)}")
    for cause in causes.itertuples(index=False):
        lines.append(f"- cause on {cause.models} models: {slack_escape(cause.error_signature)}")
    if link:
        lines.append(link)
    return {
        "text": "\n".join(lines), "run_id": run_id, "status": run.status,
        "newly_blocked": [{"model_id": r.model_id, "provider": r.provider, "reason": r.reason}
                          for r in blocked_now.itertuples(index=False)],
        "recovered": [{"model_id": m, "provider": p} for m, p in recovered],
        "new_fixes": [{"model_id": m, "provider": p} for m, p in new_fixes],
        "top_causes": causes.to_dict("records"), "link": link,
    }
