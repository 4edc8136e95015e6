"""Read-side views shared by the dashboard, the notebooks and the CLI.

Every number a user sees is computed here (or in the modules it calls), so the
dashboard, a report and ``python -m analysis diff`` always agree.  Functions
take a :class:`~analysis.store.Store` or frames and return DataFrames, dicts
or strings; none of them renders anything.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import pandas as pd

from analysis.config import HUB_URL
from analysis.errors import NoBlocklistError, UsageError
from analysis.outputs.explain import explain, spend_sentence
from analysis.outputs.export import blocklist_frame
from analysis.schema import Run, is_missing
from analysis.store import SUCCESSFUL, Store
from analysis.taxonomy import BLOCKING, REASON_NAMES, RUN_LEVEL, TRANSIENT, reason_info

__all__ = [
    "RunView",
    "default_run_id",
    "list_runs",
    "load_run",
    "kpis",
    "reason_counts",
    "target_tiles",
    "tag_reason_counts",
    "working_latencies",
    "run_trend",
    "filter_findings",
    "mapping_status_of",
    "hf_model_url",
    "curl_command",
    "model_evidence",
    "model_history",
    "run_diff",
    "blocklist_changes",
    "failing_authors",
    "conflicts",
    "top_causes",
    "publishable_run",
    "same_signature",
]


@dataclass
class RunView:
    """One run with its findings, catalog snapshot and probes."""

    run: Run
    findings: pd.DataFrame
    catalog: pd.DataFrame
    probes: pd.DataFrame

    @property
    def run_id(self) -> int:
        return int(self.run.id)


def default_run_id(store: Store) -> int | None:
    """The latest successful run, else the latest run of any status, else ``None``."""
    run_id = store.latest_run_id()
    return run_id if run_id is not None else store.latest_run_id(None)


def list_runs(store: Store) -> pd.DataFrame:
    """Runs newest first, with a one-line ``label`` for pickers."""
    runs = store.runs()
    if runs.empty:
        runs["label"] = pd.Series(dtype=str)
        return runs
    runs = runs.sort_values("id", ascending=False).reset_index(drop=True)
    labels = []
    for row in runs.to_dict("records"):
        what = row["status"] if row["status"] != "failed" else f"failed: {row['failure_reason']}"
        mode = " (predicted)" if row.get("mode") == "predict" else ""
        labels.append(f"#{row['id']} {str(row['started_at'])[:16].replace('T', ' ')} · {row['source']}:"
                      f"{row['provider']} · {what}{mode}")
    runs["label"] = labels
    return runs


def load_run(store: Store, run_id: int | None = None) -> RunView:
    """A run and its frames; ``run_id=None`` is :func:`default_run_id`."""
    if run_id is None:
        run_id = default_run_id(store)
        if run_id is None:
            raise UsageError(f"the store {store.path} has no runs yet: run a scan first")
    run = store.get_run(run_id)
    return RunView(run, store.findings(run_id), store.catalog(run_id), store.probes(run_id))


def kpis(view: RunView) -> dict[str, Any]:
    """Headline figures: models, working, blocked, transient failures, last scan time and duration."""
    f = view.findings
    return {
        "run_id": view.run_id,
        "status": view.run.status,
        "failure_reason": view.run.failure_reason,
        "predicted": view.run.mode == "predict",
        "models": int(f["model_id"].nunique()) if len(f) else 0,
        "targets": int(len(f)),
        "working": int((f["reason"] == "ok").sum()) if len(f) else 0,
        "blocked": int(f["blocked"].sum()) if len(f) else 0,
        "transient": int(f["reason"].isin(TRANSIENT).sum()) if len(f) else 0,
        "route_mismatch": int((f["reason"] == "route_mismatch").sum()) if len(f) else 0,
        "probe_error": int((f["reason"] == "probe_error").sum()) if len(f) else 0,
        "tiles": target_tiles(f),
        "last_scan_at": view.run.finished_at or view.run.started_at,
        "duration_s": view.run.duration_s,
        "spent_usd": view.run.spent_usd,
        "spend": spend_sentence(view.run.prompt_tokens, view.run.completion_tokens, view.run.spent_usd,
                                view.run.unpriced_answers),
    }


def target_tiles(findings: pd.DataFrame) -> dict[str, int]:
    """The Overview's tiles, counted in targets and adding up to all of them: each target in exactly one."""
    if findings.empty:
        return {"working": 0, "blocked": 0, "route fix": 0, "probe fix": 0, "transient": 0, "not judged": 0}
    blocked = findings["blocked"].astype(bool)
    reason = findings["reason"]
    tiles = {
        "working": int(((reason == "ok") & ~blocked).sum()),
        "blocked": int(blocked.sum()),
        "route fix": int(((reason == "route_mismatch") & ~blocked).sum()),
        "probe fix": int(((reason == "probe_error") & ~blocked).sum()),
        "transient": int((reason.isin(TRANSIENT) & ~blocked).sum()),
    }
    # the rest: run-level (not judged), predicted or allowed by an override
    tiles["not judged"] = len(findings) - sum(tiles.values())
    return tiles


def reason_counts(findings: pd.DataFrame) -> pd.DataFrame:
    """``reason, count, blocks, action`` in taxonomy order (reasons with no rows left out)."""
    counts = findings["reason"].value_counts() if len(findings) else pd.Series(dtype=int)
    rows = [{"reason": r, "count": int(counts[r]), "blocks": r in BLOCKING, "action": reason_info(r).action}
            for r in REASON_NAMES if r in counts.index]
    return pd.DataFrame(rows, columns=["reason", "count", "blocks", "action"])


def tag_reason_counts(findings: pd.DataFrame) -> pd.DataFrame:
    """Long form ``pipeline_tag, reason, count``; a missing tag shows as ``(none)``."""
    if findings.empty:
        return pd.DataFrame(columns=["pipeline_tag", "reason", "count"])
    tags = findings["pipeline_tag"].fillna("(none)").replace("", "(none)")
    grouped = (findings.assign(pipeline_tag=tags).groupby(["pipeline_tag", "reason"]).size()
               .reset_index(name="count"))
    order = {r: i for i, r in enumerate(REASON_NAMES)}
    return grouped.sort_values(["pipeline_tag", "reason"], key=lambda s: s.map(order) if s.name == "reason" else s)


def working_latencies(findings: pd.DataFrame) -> pd.Series:
    """Latency (ms) of the final attempt of every working model."""
    if findings.empty:
        return pd.Series(dtype=float, name="latency_ms")
    ok = findings[findings["reason"] == "ok"]
    return pd.to_numeric(ok["latency_ms"], errors="coerce").dropna().rename("latency_ms")


def run_trend(store: Store, source: str | None = None, provider: str | None = None) -> pd.DataFrame:
    """Per successful probing run (optionally one scope): ``run_id, started_at, total, working, blocked, transient``."""
    runs = store.runs()
    if runs.empty:
        return pd.DataFrame(columns=["run_id", "started_at", "total", "working", "blocked", "transient"])
    runs = runs[runs["status"].isin(SUCCESSFUL) & (runs["mode"] == "probe")]
    if source is not None:
        runs = runs[runs["source"] == source]
    if provider is not None:
        runs = runs[runs["provider"] == provider]
    rows = []
    for row in runs.to_dict("records"):
        counts = row["counts"] or {}
        rows.append({"run_id": row["id"], "started_at": row["started_at"], "total": sum(counts.values()),
                     "working": counts.get("ok", 0), "blocked": row["n_blocked"] or 0,
                     "transient": sum(v for k, v in counts.items() if k in TRANSIENT)})
    return pd.DataFrame(rows, columns=["run_id", "started_at", "total", "working", "blocked", "transient"])


def mapping_status_of(findings: pd.DataFrame) -> pd.Series:
    """The probed provider's mapping status per finding, ``(none)`` when unknown."""
    return findings["mapping_status"].fillna("(none)").replace("", "(none)")


# The actions an operator takes on a target now: block it, or fix our route or request (not wait, not none).
ACTIONS_NEEDED = ("block", "fix route", "fix probe")


def filter_findings(findings: pd.DataFrame, *, reasons: list[str] | None = None, blocked: bool | None = None,
                    pipeline_tags: list[str] | None = None, mapping_statuses: list[str] | None = None,
                    search: str = "", needs_action: bool = False,
                    keys: set[tuple[str, str]] | None = None) -> pd.DataFrame:
    """Rows matching every given filter.  ``search`` is a case-insensitive substring of id, detail or message;
    ``needs_action`` keeps the blocked and the route or request fixes; ``keys`` keeps those (model, provider).

    A missing pipeline tag matches ``"(none)"``; so does a missing mapping status.
    """
    mask = pd.Series(True, index=findings.index)
    if needs_action:
        mask &= findings["blocked"].astype(bool) | findings["action"].isin(ACTIONS_NEEDED)
    if keys is not None:
        mask &= pd.Series([(m, p) in keys for m, p in zip(findings["model_id"], findings["provider"])],
                          index=findings.index)
    if reasons:
        mask &= findings["reason"].isin(reasons)
    if blocked is not None:
        mask &= findings["blocked"].astype(bool) == blocked
    if pipeline_tags:
        mask &= findings["pipeline_tag"].fillna("(none)").replace("", "(none)").isin(pipeline_tags)
    if mapping_statuses:
        mask &= mapping_status_of(findings).isin(mapping_statuses)
    text = (search or "").strip().lower()
    if text:
        haystack = (findings["model_id"].fillna("") + " " + findings["detail"].fillna("") + " "
                    + findings["message"].fillna("")).str.lower()
        mask &= haystack.str.contains(text, regex=False)
    return findings[mask]


def hf_model_url(model_id: str, hub_url: str = HUB_URL) -> str:
    """The model's page on the Hub (path-quoted, so an odd id cannot break the link)."""
    return f"{hub_url.rstrip('/')}/{quote(model_id, safe='/')}"


def curl_command(url: str, model_string: str, max_tokens: int = 16,
                 prompt: str = "Reply with the single word OK.") -> str:
    """A copy-paste ``curl`` reproducing the probe; the token stays the ``$HF_TOKEN`` placeholder."""
    body = json.dumps({"model": model_string, "messages": [{"role": "user", "content": prompt}],
                       "max_tokens": max_tokens, "stream": False})
    return (f"curl -sS {shlex.quote(url)} \\\n  -H \"Authorization: Bearer $HF_TOKEN\" \\\n"
            f"  -H 'Content-Type: application/json' \\\n  -d {shlex.quote(body)}")


def model_history(store: Store, model_id: str, provider: str | None = None) -> pd.DataFrame:
    """A model's verdicts across all runs, newest first, plus run-level failures that never judged it.

    Columns: ``run_id, run_started_at, run_status, source, run_provider, provider, reason, blocked,
    http_status, detail, model_string, predicted``.  A run whose scope covers the model and
    that failed at run level (token, credits, endpoint) before probing it shows with the run's
    reason and ``detail`` saying it was not judged.
    """
    columns = ["run_id", "run_started_at", "run_status", "source", "run_provider", "provider", "reason", "blocked",
               "http_status", "detail", "model_string", "predicted"]
    hist = store.model_history(model_id, provider)
    rows = hist[[c for c in columns if c in hist.columns]].to_dict("records") if len(hist) else []
    judged = {r["run_id"] for r in rows}
    runs = store.runs()
    for run in runs[(runs["status"] == "failed") & runs["failure_reason"].isin(sorted(RUN_LEVEL))].to_dict("records"):
        if run["id"] in judged or not _scope_covers(run["provider"], provider):
            continue
        rows.append({"run_id": run["id"], "run_started_at": run["started_at"], "run_status": "failed",
                     "source": run["source"], "run_provider": run["provider"], "provider": provider or "",
                     "reason": run["failure_reason"], "blocked": False, "http_status": None,
                     "detail": f"run-level failure, this model was not judged: {run['failure_message'] or ''}",
                     "model_string": None, "predicted": False})
    frame = pd.DataFrame(rows, columns=columns)
    frame["predicted"] = frame["predicted"].astype(bool)
    frame["blocked"] = frame["blocked"].astype(bool)
    return frame.sort_values("run_id", ascending=False).reset_index(drop=True)


def _scope_covers(run_provider: str, provider: str | None) -> bool:
    """Whether a run's provider spec (``all``, ``-``, a name or a comma list) takes in ``provider``."""
    if not provider or run_provider in ("all", "-", ""):
        return True
    return provider in [p.strip() for p in run_provider.split(",")]


def _first(frame: pd.DataFrame) -> dict[str, Any] | None:
    """The first row as a dict, with missing cells as ``None`` (NaN is truthy: ``if row["x"]`` would lie)."""
    if frame.empty:
        return None
    return {str(k): None if is_missing(v) else v for k, v in frame.iloc[0].to_dict().items()}


def model_evidence(store: Store, run_id: int, model_id: str, provider: str | None = None) -> dict[str, Any]:
    """Everything behind one verdict: finding, catalog facts, mappings, probes, attempts, curl, history, why.

    Raises :class:`~analysis.errors.UsageError` if the model has no finding in the run.
    """
    run = store.get_run(run_id)
    findings = store.findings(run_id)
    rows = findings[findings["model_id"] == model_id]
    if provider is not None:
        rows = rows[rows["provider"] == provider]
    finding = _first(rows)
    if finding is None:
        raise UsageError(f"model {model_id!r} has no finding in run {run_id}")
    catalog = store.catalog(run_id)
    cat_row = _first(catalog[catalog["model_id"] == model_id])
    mapping = (cat_row or {}).get("mapping") or {}
    mappings = pd.DataFrame([{"provider": p, **m} for p, m in sorted(mapping.items())],
                            columns=["provider", "status", "task", "providerId"])
    probes = store.probes(run_id, model_id)
    probes = probes[(probes["provider"] == finding["provider"]) | (probes["route_for"] == finding["provider"])]
    attempts = []
    for probe in probes.to_dict("records"):
        for attempt in probe["attempt_log"]:
            attempts.append({"kind": probe["kind"], "model_string": probe["model_string"], "url": probe["url"],
                             **attempt})
    attempts_frame = pd.DataFrame(attempts, columns=["kind", "model_string", "url", "n", "started_at", "http_status",
                                                     "outcome", "latency_ms", "error_code", "error_message",
                                                     "retry_after", "waited_s"])
    primary = _first(probes[probes["kind"].isin(["primary", "canary"])])
    log = (primary or {}).get("attempt_log") or []
    last = log[-1] if log else {}
    answer = {"http_status": last.get("http_status"), "outcome": last.get("outcome"),
              "error_code": last.get("error_code"), "error_message": last.get("error_message"),
              "body_excerpt": last.get("body_excerpt"), "headers": last.get("headers") or {}}
    settings = run.settings or {}
    url = (primary or {}).get("url") or f"{str(run.router_url or '').rstrip('/')}/chat/completions"
    history = model_history(store, model_id, finding["provider"])
    evidence = {
        "run": run,
        "finding": finding,
        "catalog": cat_row,
        "mappings": mappings,
        "in_router_list": (cat_row or {}).get("in_router_list"),
        "router_providers": (cat_row or {}).get("router_providers") or [],
        "probes": probes.drop(columns=["attempt_log"]),
        "answer": answer,  # what came back on our route's last attempt
        "attempts": attempts_frame,
        "request": {"url": url, "model_string": finding.get("model_string") or model_id,
                    "max_tokens": settings.get("max_tokens", 16)},
        "curl": curl_command(url, finding.get("model_string") or model_id, settings.get("max_tokens", 16)),
        "history": history,
        "alternatives": list(finding.get("alternatives") or []),
        "message": finding.get("message"),
        "hub_page": hf_model_url(model_id),
    }
    evidence["why"] = explain(evidence)
    return evidence


def changed_since_previous(store: Store, run_id: int) -> set[tuple[str, str]] | None:
    """The (model, provider) targets whose verdict is new in this run: another reason than in the previous
    successful run of the scope, or no verdict there at all.  ``None`` without a previous run."""
    previous = store.previous_ok_run(run_id)
    if previous is None:
        return None
    earlier = store.findings(previous)
    before = {(m, p): r for m, p, r in zip(earlier["model_id"], earlier["provider"], earlier["reason"])}
    now = store.findings(run_id)
    return {(m, p) for m, p, r in zip(now["model_id"], now["provider"], now["reason"]) if before.get((m, p)) != r}


def run_diff(store: Store, from_run: int, to_run: int) -> pd.DataFrame:
    """Changes from one run to another: ``newly_blocked``, ``recovered``, ``reason_changed``.

    ``recovered`` means not ok before and ok now.  Columns: ``change, model_id, provider,
    from_reason, to_reason, from_blocked, to_blocked``.
    """
    columns = ["change", "model_id", "provider", "from_reason", "to_reason", "from_blocked", "to_blocked"]
    before = store.findings(from_run)[["model_id", "provider", "reason", "blocked"]]
    after = store.findings(to_run)[["model_id", "provider", "reason", "blocked"]]
    if store.get_run(from_run).status not in SUCCESSFUL:
        before = before.assign(blocked=False)
    merged = after.merge(before, on=["model_id", "provider"], how="left", suffixes=("_to", "_from"))
    rows = []
    for r in merged.to_dict("records"):
        from_reason = r["reason_from"] if isinstance(r["reason_from"], str) else None
        from_blocked = bool(r["blocked_from"]) if from_reason is not None else False
        change = None
        if r["blocked_to"] and not from_blocked:
            change = "newly_blocked"
        elif r["reason_to"] == "ok" and from_reason not in (None, "ok"):
            change = "recovered"
        elif from_reason is not None and from_reason != r["reason_to"]:
            change = "reason_changed"
        if change:
            rows.append({"change": change, "model_id": r["model_id"], "provider": r["provider"],
                         "from_reason": from_reason, "to_reason": r["reason_to"], "from_blocked": from_blocked,
                         "to_blocked": bool(r["blocked_to"])})
    order = {"newly_blocked": 0, "recovered": 1, "reason_changed": 2}
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["change", "model_id", "provider"], key=lambda s: s.map(order) if s.name == "change"
                             else s).reset_index(drop=True)


def blocklist_changes(store: Store, run_id: int, reasons: set[str] | None = None,
                      previous_run_id: int | None = None) -> dict[str, Any]:
    """Blocklist rows added and removed since the previous successful run of the same scope."""
    prev = previous_run_id if previous_run_id is not None else store.previous_ok_run(run_id)
    current = blocklist_frame(store.findings(run_id), reasons)
    keys = ["model_id", "provider"]
    if prev is None:
        return {"previous_run_id": None, "added": current, "removed": current.iloc[0:0]}
    old = blocklist_frame(store.findings(prev), reasons)
    old_keys = set(map(tuple, old[keys].values.tolist()))
    new_keys = set(map(tuple, current[keys].values.tolist()))
    added = current[[tuple(k) not in old_keys for k in current[keys].values.tolist()]]
    removed = old[[tuple(k) not in new_keys for k in old[keys].values.tolist()]]
    return {"previous_run_id": prev, "added": added.reset_index(drop=True), "removed": removed.reset_index(drop=True)}


def failing_authors(findings: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """Authors with the most failing targets: ``author, failing, blocked, total, failing_share``."""
    if findings.empty:
        return pd.DataFrame(columns=["author", "failing", "blocked", "total", "failing_share"])
    frame = findings.assign(author=findings["model_id"].str.split("/").str[0],
                            failing=findings["reason"] != "ok", blocked=findings["blocked"].astype(bool))
    grouped = frame.groupby("author").agg(failing=("failing", "sum"), blocked=("blocked", "sum"),
                                          total=("model_id", "size")).reset_index()
    grouped["failing_share"] = (grouped["failing"] / grouped["total"]).round(3)
    grouped = grouped[grouped["failing"] > 0]
    return grouped.sort_values(["failing", "total", "author"], ascending=[False, False, True]).head(top).reset_index(
        drop=True)


def conflicts(findings: pd.DataFrame) -> pd.DataFrame:
    """Models whose evidence disagrees, with a ``conflict`` description.

    - the catalog maps the provider ``live`` but the router refuses the model, unexplained;
    - the router lists the model but refuses it, unexplained;
    - the catalog says it is not a chat model, yet it answered.
    """
    columns = ["model_id", "provider", "reason", "conflict", "detail"]
    if findings.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for r in findings.to_dict("records"):
        unexplained_refusal = r["reason"] in ("not_found", "not_supported", "route_mismatch")
        if unexplained_refusal and r.get("mapping_status") == "live":
            rows.append((r["model_id"], r["provider"], r["reason"],
                         "the catalog maps the provider live, but the router refuses the model", r["detail"]))
        elif unexplained_refusal and r.get("in_router_list") is True:
            rows.append((r["model_id"], r["provider"], r["reason"],
                         "the router lists the model, but refuses it", r["detail"]))
        elif r["reason"] == "ok" and "not a chat model" in str(r.get("note") or ""):
            rows.append((r["model_id"], r["provider"], r["reason"],
                         "the catalog says it is not a chat model, yet it answered a chat completion", r["detail"]))
    return pd.DataFrame(rows, columns=columns)


def top_causes(findings: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """The failure causes of a run ranked by how many models they hit: ``error_signature, models, targets,
    reasons, example``.  One cause seen on 40 models is one row; a signature shared by most of a run is a
    run-level suspect."""
    columns = ["error_signature", "models", "targets", "reasons", "example"]
    if findings.empty or "error_signature" not in findings:
        return pd.DataFrame(columns=columns)
    failing = findings[findings["error_signature"].notna() & (findings["error_signature"] != "")]
    if failing.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for signature, group in failing.groupby("error_signature", sort=False):
        reasons = ", ".join(r for r in REASON_NAMES if r in set(group["reason"]))
        example = group.sort_values(["model_id", "provider"]).iloc[0]
        rows.append({"error_signature": signature, "models": int(group["model_id"].nunique()),
                     "targets": int(len(group)), "reasons": reasons,
                     "example": example["model_string"] or example["model_id"]})
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["models", "targets", "error_signature"], ascending=[False, False, True]).head(
        top).reset_index(drop=True)


def same_signature(findings: pd.DataFrame, model_id: str, provider: str) -> pd.DataFrame:
    """The other targets of the run that failed with the same error signature as this one
    (``model_id, provider, reason``)."""
    columns = ["model_id", "provider", "reason"]
    if findings.empty or "error_signature" not in findings:
        return pd.DataFrame(columns=columns)
    mine = findings[(findings["model_id"] == model_id) & (findings["provider"] == provider)]["error_signature"]
    if mine.empty or pd.isna(mine.iloc[0]) or not mine.iloc[0]:
        return pd.DataFrame(columns=columns)
    same = findings[(findings["error_signature"] == mine.iloc[0])
                    & ~((findings["model_id"] == model_id) & (findings["provider"] == provider))]
    return same[columns].sort_values(["model_id", "provider"]).reset_index(drop=True)


def _human_age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}".replace(".0" + unit, unit)
    return f"{seconds:.0f}s"


def publishable_run(store: Store, run_id: int | None, max_age_s: float | None,
                    now: datetime | None = None) -> int:
    """The run a blocklist (or the fixes) may be published from, or :class:`NoBlocklistError` (exit 3).

    Only a successful probing run feeds a blocklist: an empty file from a failed,
    incomplete or predicted run would unblock every model downstream.  ``run_id=None``
    is the latest successful probing run; ``max_age_s`` refuses a run that finished
    longer ago.
    """
    if run_id is None:
        found = store.latest_run_id(mode="probe")
        if found is None:
            raise NoBlocklistError(f"no successful probing run in {store.path}: no blocklist written (an empty one "
                                   "would unblock every model)")
        run_id = found
        info = store.get_run(run_id)
    else:
        info = store.get_run(run_id)
        if info.status not in SUCCESSFUL or info.mode == "predict":
            what = "a metadata-only (predicted) run" if info.status in SUCCESSFUL else info.status
            why = f" ({info.failure_reason})" if info.failure_reason else ""
            raise NoBlocklistError(f"run {run_id} is {what}{why}: only a successful probing run feeds a blocklist; "
                                   "nothing written")
    if max_age_s is not None:
        finished = info.finished_at or info.started_at
        when = datetime.fromisoformat(str(finished).replace("Z", "+00:00"))
        age = ((now or datetime.now(timezone.utc)) - when).total_seconds()
        if age > max_age_s:
            raise NoBlocklistError(f"run {run_id} finished {_human_age(age)} ago, older than --max-age "
                                   f"{_human_age(max_age_s)}: nothing written; run a new scan")
    return run_id
