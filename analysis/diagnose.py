"""Catalog facts + probe evidence -> one verdict per target.  Pure: no I/O.

:func:`classify` decides one target; :func:`diagnose` applies it to frames.
Catalog facts only ever *explain a refusal*: a non-chat model that answers is
``ok``, and one that times out is a ``timeout`` (with a note).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .catalog import mapping_facts
from .taxonomy import BLOCKING, CHAT_PIPELINE_TAGS, RUN_LEVEL, TRANSIENT, reason_info

__all__ = [
    "FINDING_COLUMNS",
    "Facts",
    "Verdict",
    "classify",
    "diagnose",
    "user_message",
    "canary_verdict",
    "endpoint_refusal",
    "predict",
]

FINDING_COLUMNS = [
    "model_id", "provider", "reason", "blocked", "http_status", "pipeline_tag", "detail", "message",
    "latency_ms", "attempts", "checked_at", "model_string", "action", "predicted", "error_code", "note",
    "mapping_status", "mapping_task", "in_router_list", "gated", "working_route",
]

REFUSAL_STATUSES = frozenset({400, 404, 422})
CHAT_TASK = "conversational"
# A refusal naming one of these is about the probe's request, not the model.
_BUDGET_IN_MESSAGE = re.compile(r"\b(max_tokens|max_completion_tokens)\b")
# Error codes that are about the model itself, whatever the message says.
MODEL_LEVEL_CODES = frozenset({"model_not_supported", "model_not_found", "gated_repo", "repo_not_found",
                               "RepoNotFound", "GatedRepo"})


@dataclass(frozen=True)
class Facts:
    """Everything known about one target, flattened for :func:`classify`."""

    model_id: str
    provider: str
    http_status: int | None
    outcome: str | None  # chat | invalid | http_error | timeout | connection | None (not probed)
    error_code: str | None = None
    error_message: str | None = None
    attempts: int = 0
    pipeline_tag: str | None = None
    gated: str = "false"
    mapping_status: str | None = None
    mapping_task: str | None = None
    in_router_list: bool | None = None
    in_catalog: bool = True
    working_route: str | None = None


@dataclass(frozen=True)
class Verdict:
    reason: str
    detail: str
    note: str = ""


def _names_request_param(message: str | None, code: str | None) -> bool:
    """Whether a refusal is about a parameter of our request (the probe's fault), not the model.

    An explicit ``param`` other than ``model`` says so; a model-level error code
    says not; otherwise only a message about the token budget counts.
    """
    if not message or code in MODEL_LEVEL_CODES:
        return False
    match = re.search(r"\[param=([^\]]+)\]", message)
    if match:
        return match.group(1) != "model"
    return bool(_BUDGET_IN_MESSAGE.search(message))


def _is_gated(gated: str) -> bool:
    return gated not in ("false", "", "None")


def classify(f: Facts) -> Verdict:
    """The single reason for one target, with its one-line evidence.

    Rows are tested in the taxonomy's precedence order.
    """
    status = f.http_status if f.outcome == "http_error" else None
    refused = status in REFUSAL_STATUSES
    tag_non_chat = f.pipeline_tag is not None and f.pipeline_tag not in CHAT_PIPELINE_TAGS
    task_non_chat = f.mapping_task is not None and f.mapping_task != CHAT_TASK
    note = ""

    if status == 401:
        reason = "auth_error"
    elif status == 402:
        reason = "payment_required"
    elif status == 410:
        reason = "endpoint_error"
    elif refused and f.working_route:
        reason = "route_mismatch"
    elif refused and _names_request_param(f.error_message, f.error_code):
        reason = "probe_error"
    elif status == 403 or (refused and _is_gated(f.gated)):
        reason = "gated"
    elif refused and (tag_non_chat or task_non_chat):
        reason = "non_chat_task"
    elif refused and f.mapping_status in ("error", "staging"):
        reason = "provider_mapping_error"
    elif status == 404:
        reason = "not_found"
    elif refused:
        reason = "not_supported"
    elif status == 429:
        reason = "rate_limited"
    elif f.outcome == "timeout":
        reason = "timeout"
    elif status is not None and 500 <= status <= 599:
        reason = "upstream_error"
    elif f.outcome == "connection":
        reason = "connection_error"
    elif f.outcome == "chat":
        reason = "ok"
    else:
        reason = "invalid_response"  # a 2xx that is not a chat completion, or an unexpected status

    if reason in TRANSIENT and (tag_non_chat or task_non_chat):
        note = "catalog says this is not a chat model, but the probe was not refused, so that is not the verdict"
    elif reason == "ok" and (tag_non_chat or task_non_chat):
        note = "catalog says this is not a chat model, yet it answered a chat completion"
    return Verdict(reason, _detail(f), note)


def _detail(f: Facts) -> str:
    parts = [_probe_part(f)]
    if f.working_route:
        parts.append(f"works as {f.working_route}")
    if f.in_catalog:
        parts.append(f"pipeline_tag={f.pipeline_tag or 'missing'}")
        if f.provider:
            if f.mapping_status == "unmapped":
                parts.append(f"not mapped to {f.provider}")
            elif f.mapping_status:
                parts.append(f"{f.provider} mapping {f.mapping_status} ({f.mapping_task or 'task unknown'})")
            else:
                parts.append("no provider mapping in catalog")
        elif f.mapping_status:
            parts.append(f"best mapping {f.mapping_status} ({f.mapping_task or 'task unknown'})")
        if _is_gated(f.gated):
            parts.append(f"gated={f.gated}")
    else:
        parts.append("not in catalog")
    if f.in_router_list is True:
        parts.append("in router list")
    elif f.in_router_list is False:
        parts.append("not in router list")
    return "; ".join(parts)


def _probe_part(f: Facts) -> str:
    tries = f"{f.attempts} attempt{'s' if f.attempts != 1 else ''}"
    if f.outcome is None:
        return "not probed"
    if f.outcome == "chat":
        return f"router {f.http_status} chat completion ({tries})"
    if f.outcome == "http_error":
        code = f" {f.error_code}" if f.error_code else ""
        return f"router {f.http_status}{code} ({tries})"
    if f.outcome == "timeout":
        return f"timeout ({tries})"
    if f.outcome == "connection":
        return f"connection error {f.error_code or ''} ({tries})".replace("  ", " ")
    return f"router {f.http_status} {f.error_code or 'invalid body'} ({tries})"


def user_message(reason: str, model_id: str, working_route: str | None = None) -> str:
    """The text a gateway can return instead of an opaque 502."""
    text = reason_info(reason).message.format(model=model_id)
    if reason == "route_mismatch" and working_route:
        text += f" It answers when called as '{working_route}'."
    return text


def _nullable_int(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None
    return int(value)


def _nullable(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return value


def diagnose(catalog: pd.DataFrame, probes: pd.DataFrame, *, run_ok: bool = True) -> pd.DataFrame:
    """Findings for every primary probe: ``FINDING_COLUMNS``, one row per (model, provider).

    ``probes`` rows with ``kind == "route"`` are route checks: if one of them
    answered with a chat completion, a refused target becomes ``route_mismatch``.
    Rows of kind ``canary`` (a canary from outside the catalog) are not findings.
    With ``run_ok=False`` (a failed run) nothing is ever blocked.
    """
    # Columns as plain lists, never to_dict("records"): with pandas' Arrow strings that
    # boxes every cell one by one and was ~70% of the time (benchmarks/bench_diagnose.py).
    cat_index = {mid: i for i, mid in enumerate(catalog["model_id"].tolist())}
    c_tag, c_gated, c_mapping, c_listed = (catalog[col].tolist()
                                           for col in ("pipeline_tag", "gated", "mapping", "in_router_list"))
    kinds = probes["kind"] if "kind" in probes else pd.Series("primary", index=probes.index)
    is_route = kinds == "route"
    primary = probes[kinds == "primary"]
    working: dict[tuple[str, str], str] = {}
    checks = probes[is_route & (probes["outcome"] == "chat")]
    for model_id, route_for, model_string in zip(checks["model_id"], checks["route_for"], checks["model_string"]):
        working.setdefault((model_id, route_for or ""), model_string)

    def column(name: str) -> list[Any]:
        return primary[name].tolist() if name in primary else [None] * len(primary)

    out: dict[str, list[Any]] = {name: [] for name in FINDING_COLUMNS}
    per_row = ("model_id", "provider", "reason", "blocked", "http_status", "pipeline_tag", "detail", "message",
               "attempts", "error_code", "note", "action", "mapping_status", "mapping_task", "in_router_list",
               "gated", "working_route")
    appends = [out[name].append for name in per_row]
    # A verdict (reason, detail, note) never names the model, so targets with the same
    # facts share one: a catalog has a few hundred distinct fact sets, not 200,000.
    verdicts: dict[tuple[Any, ...], tuple[Verdict, bool, str]] = {}
    for model_id, provider, status, outcome, code, message, attempts, probe_note in zip(
            column("model_id"), column("provider"), column("http_status"), column("outcome"), column("error_code"),
            column("error_message"), column("attempts"), column("note")):
        provider = provider or ""
        idx = cat_index.get(model_id)
        if idx is not None:
            m_status, m_task = mapping_facts(c_mapping[idx], provider)
            tag, gated, listed = _nullable(c_tag[idx]), c_gated[idx] or "false", _nullable(c_listed[idx])
        else:
            m_status = m_task = tag = listed = None
            gated = "false"
        status, code, message, attempts = _nullable_int(status), _nullable(code), _nullable(message), int(attempts or 0)
        working_route = working.get((model_id, provider))
        names_param = status in REFUSAL_STATUSES and _names_request_param(message, code)
        key = (provider, status, outcome, code, names_param, attempts, tag, gated, m_status, m_task, listed,
               idx is not None, working_route)
        cached = verdicts.get(key)
        if cached is None:
            verdict = classify(Facts(model_id=model_id, provider=provider, http_status=status, outcome=outcome,
                                     error_code=code, error_message=message, attempts=attempts, pipeline_tag=tag,
                                     gated=gated, mapping_status=m_status, mapping_task=m_task,
                                     in_router_list=listed, in_catalog=idx is not None,
                                     working_route=working_route))
            action = reason_info(verdict.reason).action if run_ok or verdict.reason in RUN_LEVEL else "none"
            cached = verdicts[key] = (verdict, bool(run_ok and verdict.reason in BLOCKING), action)
        verdict, blocked, action = cached
        probe_note = _nullable(probe_note)
        note = f"{verdict.note}; {probe_note}" if verdict.note and probe_note else (verdict.note or probe_note or "")
        for append, value in zip(appends, (
                model_id, provider, verdict.reason, blocked, status, tag, verdict.detail,
                user_message(verdict.reason, model_id, working_route), attempts, code, note, action, m_status,
                m_task, listed, gated, working_route)):
            append(value)
    out["predicted"] = [False] * len(out["model_id"])
    out["latency_ms"] = [_nullable(v) for v in column("latency_ms")]
    out["checked_at"] = column("finished_at")
    out["model_string"] = column("model_string")
    return pd.DataFrame(out, columns=FINDING_COLUMNS)


def endpoint_refusal(result: Any) -> bool:
    """Whether an answer says the endpoint is wrong rather than the model: a 410, or a 404
    that does not name the model (no model-level code, no ``param=model``, no model id)."""
    if result.outcome != "http_error":
        return False
    if result.http_status == 410:
        return True
    if result.http_status != 404:
        return False
    message = result.error_message or ""
    return (result.error_code not in MODEL_LEVEL_CODES and "[param=model]" not in message
            and result.model_id not in message)


def canary_verdict(results: list[Any]) -> tuple[str, str] | None:
    """A run-level ``(reason, why)`` when every canary failed the same way the setup would, else ``None``.

    Canaries are known-good models, so when all of them fail alike the setup is
    wrong, not the models: every one refused by the endpoint (404/410 not about
    the model) is ``endpoint_error``; every one unreachable (no HTTP answer) is
    ``endpoint_error`` too; every one forbidden (403) is ``auth_error``: the
    token lacks permission for Inference Providers.
    """
    if not results:
        return None
    if all(endpoint_refusal(r) for r in results):
        return "endpoint_error", "refused by the endpoint (404/410 that does not name the model)"
    if all(r.outcome == "connection" for r in results):
        return "endpoint_error", "unreachable (no HTTP answer)"
    if all(r.outcome == "http_error" and r.http_status == 403 for r in results):
        return "auth_error", "forbidden (403): the token may lack permission to call Inference Providers"
    return None


def predict(catalog: pd.DataFrame, targets: list[Any], checked_at: str) -> pd.DataFrame:
    """Metadata-only verdicts (``scan --no-probe``): no request is sent, nothing is blocked.

    A non-chat pipeline tag or mapping task predicts ``non_chat_task``; a mapping
    in ``error``/``staging`` (or none for the provider) predicts
    ``provider_mapping_error``; a model the router does not list predicts
    ``not_supported``; anything else predicts ``ok``.
    """
    cat_index = {mid: i for i, mid in enumerate(catalog["model_id"])}
    cat_rows = catalog.to_dict("records")
    rows = []
    for target in targets:
        idx = cat_index.get(target.model_id)
        c = cat_rows[idx] if idx is not None else {}
        m_status, m_task = mapping_facts(c.get("mapping"), target.provider)
        tag = _nullable(c.get("pipeline_tag"))
        listed = _nullable(c.get("in_router_list"))
        if (tag is not None and tag not in CHAT_PIPELINE_TAGS) or (m_task is not None and m_task != CHAT_TASK):
            reason = "non_chat_task"
        elif m_status in ("error", "staging", "unmapped"):
            reason = "provider_mapping_error"
        elif listed is False:
            reason = "not_supported"
        else:
            reason = "ok"
        facts = Facts(model_id=target.model_id, provider=target.provider, http_status=None, outcome=None,
                      pipeline_tag=tag, gated=c.get("gated") or "false", mapping_status=m_status,
                      mapping_task=m_task, in_router_list=listed, in_catalog=bool(c))
        rows.append({
            "model_id": target.model_id, "provider": target.provider, "reason": reason, "blocked": False,
            "http_status": None, "pipeline_tag": tag, "detail": "predicted from metadata; " + _detail(facts),
            "message": user_message(reason, target.model_id), "latency_ms": None, "attempts": 0,
            "checked_at": checked_at, "model_string": target.model_string, "action": "none", "predicted": True,
            "error_code": None, "note": "predicted: no request was sent", "mapping_status": m_status,
            "mapping_task": m_task, "in_router_list": listed, "gated": c.get("gated") or "false",
            "working_route": None,
        })
    return pd.DataFrame(rows, columns=FINDING_COLUMNS)
