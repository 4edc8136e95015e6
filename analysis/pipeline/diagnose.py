"""Catalog facts + probe evidence -> one verdict per target (taxonomy version 2).  Pure: no I/O.

:func:`classify` decides one target; :func:`diagnose` applies it to frames.
The text tests (:func:`answer_kind`, :func:`request_fault`) read status, code
and message together, since provider errors pass through the router in every
shape.  Catalog facts only ever *explain a refusal*: a non-chat model that
answers is ``ok``, and one that times out is a ``timeout`` (with a note).
Run-level reasons are never decided here from one model: the canaries and the
majority rule (:mod:`analysis.pipeline.canaries`) decide them, and :func:`diagnose`
applies them to the targets of a faulted provider.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.pipeline.signature import error_signature
from analysis.pipeline.targets import mapping_facts
from analysis.schema import FINDING_COLUMNS, is_missing
from analysis.taxonomy import BLOCKING, CHAT_PIPELINE_TAGS, RUN_LEVEL, TRANSIENT, reason_info

__all__ = [
    "FINDING_COLUMNS",
    "REFUSAL_STATUSES",
    "Facts",
    "Verdict",
    "answer_kind",
    "request_fault",
    "classify",
    "diagnose",
    "user_message",
    "predict",
]


REFUSAL_STATUSES = frozenset({400, 404, 422})
CHAT_TASK = "conversational"
# Error codes that are about the model itself, whatever the message says.
MODEL_LEVEL_CODES = frozenset({"model_not_supported", "model_not_found", "gated_repo", "repo_not_found",
                               "RepoNotFound", "GatedRepo"})
_PARAM = re.compile(r"\[param=([^\]]+)\]")
# Parameters of our request: a refusal naming one may be the probe's fault.
REQUEST_PARAMS = ("max_completion_tokens", "max_new_tokens", "max_tokens", "stream", "messages")
_REQUEST_WORDS = re.compile(r"\b(max_completion_tokens|max_new_tokens|max_tokens|stream(?:ing)?|messages?|budget|"
                            r"thinking)\b", re.IGNORECASE)
_TEMPORARY = re.compile(r"currently loading|is loading|being loaded|endpoint is paused|is paused|\bpaused\b|"
                        r"temporarily unavailable|overloaded|scaled to zero|is initiali[sz]ing|cold start",
                        re.IGNORECASE)
_TOKEN = re.compile(r"token|credential|permission|authenticat|authori[sz]|api[ _-]?key|username or password|"
                    r"inference providers", re.IGNORECASE)
# About the repository's access, not a region or a firewall ("restricted in your region" is not gating).
_ACCESS = re.compile(r"gated|request access|must have access|access to (?:the )?(?:model|repo)|"
                     r"awaiting (?:a )?review|accept the (?:licen[cs]e|conditions)", re.IGNORECASE)
_NON_CHAT = re.compile(r"chat[ _]template|not a chat model|no chat completions?|chat completions? (?:is |are )?not "
                       r"supported|(?:does not|doesn't) support (?:the )?(?:chat|task '?conversational)",
                       re.IGNORECASE)
_ACCOUNT = re.compile(r"any provider you have enabled", re.IGNORECASE)


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
    working_settings: str | None = None  # a request experiment that answered
    experiment: str | None = None  # evidence of a request experiment that did not answer
    run_level: str | None = None  # the run-level reason of this target's provider (never blocked)
    run_level_why: str = ""


@dataclass(frozen=True)
class Verdict:
    reason: str
    detail: str
    note: str = ""


def _lower_text(code: str | None, message: str | None) -> str:
    return f"{code or ''} {message or ''}"


def answer_kind(status: int | None, code: str | None, message: str | None) -> str | None:
    """What an error answer is about, from status, code and text together.

    ``temporary`` (loading, paused: any status), ``token`` (401, or a 403 about
    the token or its permissions), ``payment`` (402), ``retired`` (410),
    ``account`` (a provider switched off in the account's settings), ``access``
    (the repository is gated), or ``None``.
    """
    if status is None:
        return None
    text = _lower_text(code, message)
    if _TEMPORARY.search(text):
        return "temporary"
    if status == 401:
        return "token"
    if status == 402:
        return "payment"
    if status == 410:
        return "retired"
    if _ACCESS.search(text) or code in ("gated_repo", "GatedRepo"):
        return "access"
    if status == 403 and _TOKEN.search(text):
        return "token"
    if _ACCOUNT.search(text):
        return "account"
    return None


def request_fault(status: int | None, code: str | None, message: str | None) -> str | None:
    """The request parameter a refusal is about (``max_tokens``, ``stream``...), or ``None``.

    An explicit ``param`` naming one of ours says so, ``param=model`` or a
    model-level code says not; otherwise the code and text are searched for our
    parameters and for the budget words ("budget", "thinking").
    """
    if status not in REFUSAL_STATUSES or not (code or message):
        return None
    message = message or ""
    param = _PARAM.search(message)
    if param is not None:
        name = param.group(1)
        if name == "model":
            return None
        if name in REQUEST_PARAMS:
            return name
    if code in MODEL_LEVEL_CODES:
        return None
    match = _REQUEST_WORDS.search(_lower_text(code, _PARAM.sub("", message)))
    if match is None:
        return None if param is None else param.group(1)
    word = match.group(1).lower()
    if word.startswith("stream"):
        return "stream"
    if word in ("budget", "thinking"):
        return "max_tokens"
    return "messages" if word.startswith("message") else word


def _is_gated(gated: str) -> bool:
    return gated not in ("false", "", "None")


def classify(f: Facts) -> Verdict:
    """The single reason for one target, with its one-line evidence.

    Rows are tested in the taxonomy's precedence order.
    """
    status = f.http_status if f.outcome == "http_error" else None
    kind = answer_kind(status, f.error_code, f.error_message)
    refused = status in REFUSAL_STATUSES and kind not in ("temporary", "token", "payment", "retired")
    tag_non_chat = f.pipeline_tag is not None and f.pipeline_tag not in CHAT_PIPELINE_TAGS
    task_non_chat = f.mapping_task is not None and f.mapping_task != CHAT_TASK
    says_non_chat = bool(_NON_CHAT.search(_lower_text(f.error_code, f.error_message))) if status else False
    note = ""

    if f.run_level and f.outcome != "chat":
        reason = f.run_level
    elif refused and f.working_route:
        reason = "route_mismatch"
    elif refused and f.working_settings:
        reason = "probe_error"
    elif status is not None and kind == "access":
        reason = "gated"
    elif refused and (tag_non_chat or task_non_chat or says_non_chat):
        reason = "non_chat_task"
    elif refused and f.mapping_status in ("error", "staging"):
        reason = "provider_mapping_error"
    elif refused and status == 404:
        reason = "not_found"
    elif refused:
        reason = "not_supported"
    elif status == 429:
        reason = "rate_limited"
    elif f.outcome == "timeout" or status == 408:
        reason = "timeout"
    elif status is not None and (kind is not None or status >= 500 or status in (403, 424)):
        reason = "upstream_error"
    elif f.outcome == "connection":
        reason = "connection_error"
    elif f.outcome == "chat":
        reason = "ok"
    else:
        reason = "invalid_response"  # a 2xx that is not a chat completion, an undecodable body, an odd status

    if reason in TRANSIENT and (tag_non_chat or task_non_chat):
        note = "catalog says this is not a chat model, but the probe was not refused, so that is not the verdict"
    elif reason == "ok" and (tag_non_chat or task_non_chat):
        note = "catalog says this is not a chat model, yet it answered a chat completion"
    elif reason == "upstream_error" and kind in ("token", "payment", "retired"):
        note = (f"a {status} for this model alone, while the canaries and the rest of the run answered: a fault of "
                "the provider for this model, not of the token or the endpoint")
    return Verdict(reason, _detail(f), note)


def _detail(f: Facts) -> str:
    parts = [_probe_part(f)]
    if f.run_level and f.outcome != "chat":
        parts.insert(0, f"not judged: {f.run_level_why or f.run_level}")
    if f.working_route:
        parts.append(f"works as {f.working_route}")
    if f.working_settings:
        parts.append(f"works with {f.working_settings}")
    elif f.experiment:
        parts.append(f.experiment)
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
            parts.append(f"catalog gated={f.gated} (repo gating does not apply to Inference Providers)")
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


def user_message(reason: str, model_id: str, working_route: str | None = None,
                 working_settings: str | None = None) -> str:
    """The text a gateway can return instead of an opaque 502."""
    text = reason_info(reason).message.format(model=model_id)
    if reason == "route_mismatch" and working_route:
        text += f" It answers when called as '{working_route}'."
    if reason == "probe_error" and working_settings:
        text += f" It answers with {working_settings}."
    return text


def _nullable_int(value: Any) -> int | None:
    return None if is_missing(value) else int(value)


def _nullable(value: Any) -> Any:
    return None if is_missing(value) else value


def _experiments(probes: pd.DataFrame, kinds: pd.Series) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str],
                                                                                                     str]]:
    """(working settings, failed-experiment evidence) per (model, provider) from ``experiment`` probes."""
    working: dict[tuple[str, str], str] = {}
    failed: dict[tuple[str, str], str] = {}
    rows = probes[kinds == "experiment"]
    if rows.empty:
        return working, failed
    settings = rows["settings"] if "settings" in rows else pd.Series("", index=rows.index)
    for model_id, route_for, outcome, status, code, setting in zip(
            rows["model_id"], rows["route_for"], rows["outcome"], rows["http_status"], rows["error_code"], settings):
        key = (model_id, route_for or "")
        if outcome == "chat":
            working[key] = setting or "adjusted request"
        else:
            answer = f"{_nullable_int(status)} {code}" if outcome == "http_error" and code else (
                f"{_nullable_int(status)}" if outcome == "http_error" else outcome)
            failed[key] = f"retried with {setting or 'an adjusted request'}: {answer}"
    return working, failed


def diagnose(catalog: pd.DataFrame, probes: pd.DataFrame, *, run_ok: bool = True,
             targets: list[Any] | None = None, faulted: dict[str, tuple[str, str]] | None = None) -> pd.DataFrame:
    """Findings: ``FINDING_COLUMNS``, one row per target (per primary probe when ``targets`` is ``None``).

    ``probes`` rows with ``kind == "route"`` are route checks (a chat answer makes a
    refused target ``route_mismatch``), rows of kind ``experiment`` are request
    experiments (a chat answer makes a refused target ``probe_error``).  Rows of
    kind ``canary`` (a canary from outside the catalog) are not findings.
    ``faulted`` maps a provider to its run-level ``(reason, why)``: its targets get
    that reason, unjudged.  With ``run_ok=False`` (a failed run) nothing is blocked.
    """
    # Columns as plain lists, never to_dict("records"): with pandas' Arrow strings that
    # boxes every cell one by one and was ~70% of the time (benchmarks/bench_diagnose.py).
    faulted = faulted or {}
    cat_index = {mid: i for i, mid in enumerate(catalog["model_id"].tolist())}
    c_tag, c_gated, c_mapping, c_listed = (catalog[col].tolist()
                                           for col in ("pipeline_tag", "gated", "mapping", "in_router_list"))
    kinds = probes["kind"] if "kind" in probes else pd.Series("primary", index=probes.index)
    working: dict[tuple[str, str], str] = {}
    checks = probes[(kinds == "route") & (probes["outcome"] == "chat")] if len(probes) else probes
    for model_id, route_for, model_string in zip(checks.get("model_id", []), checks.get("route_for", []),
                                                 checks.get("model_string", [])):
        working.setdefault((model_id, route_for or ""), model_string)
    settings_ok, experiment_failed = _experiments(probes, kinds) if len(probes) else ({}, {})
    primary = probes[kinds == "primary"] if len(probes) else probes

    def column(name: str) -> list[Any]:
        return primary[name].tolist() if name in primary else [None] * len(primary)

    columns = ("model_id", "provider", "model_string", "http_status", "outcome", "error_code", "error_message",
               "attempts", "note", "latency_ms", "finished_at")
    rows = list(zip(*(column(name) for name in columns)))
    if targets is not None:
        by_key = {(r[0], r[1] or ""): r for r in rows}
        rows = [by_key.get((t.model_id, t.provider)) or (t.model_id, t.provider, t.model_string, None, None, None,
                                                         None, 0, None, None, None) for t in targets]

    out: dict[str, list[Any]] = {name: [] for name in FINDING_COLUMNS}
    per_row = ("model_id", "provider", "reason", "blocked", "http_status", "pipeline_tag", "detail", "message",
               "attempts", "error_code", "note", "action", "mapping_status", "mapping_task", "in_router_list",
               "gated", "working_route", "working_settings", "error_signature", "latency_ms", "checked_at",
               "model_string")
    appends = [out[name].append for name in per_row]
    # A verdict (reason, detail, note) never names the model, so targets with the same
    # facts share one: a catalog has a few hundred distinct fact sets, not 200,000.
    verdicts: dict[tuple[Any, ...], tuple[Verdict, bool, str]] = {}
    for model_id, provider, model_string, status, outcome, code, message, attempts, probe_note, latency, \
            finished in rows:
        provider = provider or ""
        idx = cat_index.get(model_id)
        if idx is not None:
            m_status, m_task = mapping_facts(c_mapping[idx], provider)
            tag, gated, listed = _nullable(c_tag[idx]), c_gated[idx] or "false", _nullable(c_listed[idx])
        else:
            m_status = m_task = tag = listed = None
            gated = "false"
        status, code, message, attempts = _nullable_int(status), _nullable(code), _nullable(message), int(attempts or 0)
        key2 = (model_id, provider)
        working_route = working.get(key2)
        working_settings = settings_ok.get(key2)
        experiment = experiment_failed.get(key2)
        run_level, run_level_why = faulted.get(provider, (None, ""))
        kind = answer_kind(status, code, message) if outcome == "http_error" else None
        key = (provider, status, outcome, code, kind, _NON_CHAT.search(_lower_text(code, message)) is not None
               if outcome == "http_error" else False, attempts, tag, gated, m_status, m_task, listed,
               idx is not None, working_route, working_settings, experiment, run_level)
        cached = verdicts.get(key)
        if cached is None:
            verdict = classify(Facts(model_id=model_id, provider=provider, http_status=status, outcome=outcome,
                                     error_code=code, error_message=message, attempts=attempts, pipeline_tag=tag,
                                     gated=gated, mapping_status=m_status, mapping_task=m_task,
                                     in_router_list=listed, in_catalog=idx is not None,
                                     working_route=working_route, working_settings=working_settings,
                                     experiment=experiment, run_level=run_level, run_level_why=run_level_why))
            judged = run_ok and verdict.reason not in RUN_LEVEL
            action = reason_info(verdict.reason).action if judged or verdict.reason in RUN_LEVEL else "none"
            cached = verdicts[key] = (verdict, bool(judged and verdict.reason in BLOCKING), action)
        verdict, blocked, action = cached
        probe_note = _nullable(probe_note)
        note = f"{verdict.note}; {probe_note}" if verdict.note and probe_note else (verdict.note or probe_note or "")
        signature = error_signature(status, code, message, outcome, model_string or "", model_id) \
            if outcome is not None else None
        for append, value in zip(appends, (
                model_id, provider, verdict.reason, blocked, status, tag, verdict.detail,
                user_message(verdict.reason, model_id, working_route, working_settings), attempts, code, note, action,
                m_status, m_task, listed, gated, working_route, working_settings, signature, _nullable(latency),
                finished, model_string)):
            append(value)
    out["predicted"] = [False] * len(out["model_id"])
    out["carried"] = [False] * len(out["model_id"])
    return pd.DataFrame(out, columns=FINDING_COLUMNS)


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
            "working_route": None, "working_settings": None, "error_signature": None, "carried": False,
        })
    return pd.DataFrame(rows, columns=FINDING_COLUMNS)
