"""Run-level faults, decided from the run: canaries per provider and the majority rule.  Pure: no I/O.

Known-good canaries are probed first, per provider.  When they all fail the
same way, the fault is the setup's (token, credits, endpoint, the account's
provider settings), not the models': that provider's part of the run is not
judged and nothing of it is blocked.  After the canaries passed, one model's
401/402/403/410 is that model's problem (``upstream_error``); a fault that hits
most of a provider's answered targets with one signature is run-level again
(:func:`majority_fault`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import pandas as pd

from analysis.pipeline.diagnose import answer_kind
from analysis.pipeline.signature import error_signature
from analysis.pipeline.targets import Target, mapping_facts
from analysis.taxonomy import CHAT_PIPELINE_TAGS

__all__ = ["ProviderFault", "MAJORITY_MIN_ANSWERS", "choose_canaries", "parse_canary", "judge_canaries",
           "majority_fault", "is_transient_answer", "describe_faults"]

MAJORITY_MIN_ANSWERS = 10  # the majority rule needs at least this many answered targets of a provider
_NO_ANSWER = ("timeout", "connection")


@dataclass(frozen=True)
class ProviderFault:
    """A run-level fault of one provider's part of the run (``provider == ""``: the bare route)."""

    provider: str
    reason: str  # auth_error | payment_required | endpoint_error
    cause: str  # token | forbidden | payment | retired | account | unreachable | same_refusal | not_chat
    signature: str
    evidence: str  # what the canaries (or the majority) answered, one line

    def hint(self, router_url: str, providers: Sequence[str] | None = None) -> str:
        """The likely cause and what to do, in words an operator acts on.

        ``providers`` names every provider that faulted the same way (default: this one).
        """
        names = sorted(providers) if providers is not None else [self.provider]
        labelled = [n or "the bare route" for n in names]
        where = (f"provider {labelled[0]}" if len(labelled) == 1
                 else f"{len(labelled)} providers ({', '.join(labelled)})")
        if names == [""]:
            where = "the router's own choice of provider"
        return {
            "token": "the router rejected the token (401): check HF_TOKEN",
            "forbidden": "the token lacks the Inference Providers permission (403): use a token with \"Make calls to "
                         "Inference Providers\"",
            "payment": "the account's credits are exhausted (402): check its billing",
            "retired": f"{router_url} answers 410 Gone, a retired API: check --router-url (the router is "
                       "https://router.huggingface.co/v1)",
            "account": f"every canary of {where} was refused as \"not supported by any provider you have enabled\": "
                       "the provider may be switched off in your Hugging Face settings "
                       "(https://huggingface.co/settings/inference-providers), or the route format is wrong",
            "unreachable": f"the router at {router_url} is unreachable: no canary got an HTTP answer; check "
                           "--router-url and the network",
            "same_refusal": f"every canary of {where} was refused the same way ({self.signature}): the endpoint, "
                            "the route format or the account is wrong, not the models; check --router-url",
            "not_chat": f"every canary of {where} got a 2xx that is not a chat completion (a login or proxy page?): "
                        "check --router-url",
        }[self.cause]


def parse_canary(spec: str) -> tuple[str, str | None]:
    """``id`` or ``id:provider`` (``--canary``) -> ``(id, provider or None)``."""
    model_id, sep, provider = spec.rpartition(":")
    if sep and model_id and provider and "/" not in provider:
        return model_id, provider
    return spec, None


def choose_canaries(catalog: pd.DataFrame, targets: Sequence[Target], explicit: Sequence[str], count: int,
                    uses_suffix: bool) -> dict[str, list[Target]]:
    """Canaries per provider in scope (``""`` is the bare route).

    ``explicit`` (``--canary``) entries are ``id`` (for every provider in scope) or
    ``id:provider``; a provider they do not cover gets chosen ones.  Chosen: models
    the catalog maps ``live`` (chat task) for the provider and the router lists,
    not gated, with a chat tag, most downloads first.  A catalog without mappings
    (a file, a plain list) falls back to the models the router lists, then any.
    """
    providers = list(dict.fromkeys(t.provider for t in targets))
    by_key = {(t.model_id, t.provider): t for t in targets}
    chosen: dict[str, list[Target]] = {p: [] for p in providers}
    for spec in explicit:
        model_id, provider = parse_canary(spec)
        for name in [provider] if provider is not None else providers:
            if name not in chosen:
                chosen[name] = []
            target = by_key.get((model_id, name))
            if target is None:
                target = Target(model_id, name, f"{model_id}:{name}" if uses_suffix and name else model_id)
            chosen[name].append(target)
    facts: dict[str, tuple[Any, ...]] = {}
    # Plain lists (tolist), not rows.loc[...] per target (~50 us a call, 0.3 s on 6,000 targets) nor a Series'
    # own iteration (an Arrow-backed column hands out its values one call at a time).
    columns = ("model_id", "mapping", "pipeline_tag", "in_router_list", "downloads", "gated")
    for model_id, mapping, tag, listed, downloads, gated in zip(*(catalog[c].tolist() for c in columns)):
        facts.setdefault(model_id, (mapping, tag, listed, downloads, gated))
    for provider in providers:
        if chosen[provider]:
            continue
        live, fallback = [], []
        for target in targets:
            if target.provider != provider or target.model_id not in facts:
                continue
            mapping, tag, listed, downloads, gated = facts[target.model_id]
            tag = tag if isinstance(tag, str) else None
            if gated not in (None, "false") or (tag is not None and tag not in CHAT_PIPELINE_TAGS) or listed is False:
                continue  # a gated or non-chat model is no known-good canary
            status, task = mapping_facts(mapping, provider)
            downloads = downloads if isinstance(downloads, (int, float)) and downloads == downloads else -1
            if status == "live" and task in (None, "conversational"):
                live.append(((0 if listed else 1, -downloads), target.model_string, target))
            elif status is None:
                fallback.append(((0 if listed else 1, -downloads), target.model_string, target))
        candidates = sorted(live or fallback, key=lambda c: (c[0], c[1]))
        chosen[provider] = [c[2] for c in candidates[:count]]
    return chosen


def is_transient_answer(result: Any) -> bool:
    """An answer that says "not now" rather than "no": 5xx, 424, 408, 429, loading/paused, or no answer."""
    if result.outcome in _NO_ANSWER:
        return True
    if result.outcome != "http_error":
        return False
    status = result.http_status or 0
    return status >= 500 or status in (408, 424, 429) or answer_kind(
        status, result.error_code, result.error_message) == "temporary"


def _signature(result: Any) -> str:
    return error_signature(result.http_status, result.error_code, result.error_message, result.outcome,
                           result.model_string, result.model_id) or ""


def _decisive(result: Any) -> str | None:
    """The cause an answer shows on its own, whatever the other canaries say: the token, the credits, a retired
    API, the account's provider settings."""
    if result.outcome != "http_error":
        return None
    kind = answer_kind(result.http_status, result.error_code, result.error_message)
    if kind == "token":
        return "token" if result.http_status == 401 else "forbidden"
    return {"payment": "payment", "retired": "retired", "account": "account"}.get(kind or "")


_REASON = {"token": "auth_error", "forbidden": "auth_error", "payment": "payment_required"}


def _evidence(results: Iterable[Any]) -> str:
    return "; ".join(f"{r.model_string} {r.http_status or r.outcome} {r.error_code or ''}".strip() for r in results)


def judge_canaries(provider: str, results: Sequence[Any]) -> ProviderFault | None:
    """A run-level fault when the canaries of ``provider`` all fail alike, else ``None``.

    Only canaries with an HTTP answer are compared; no answer at all is one
    "unreachable" class.  An answer about the token, the credits, a retired API
    or the account's provider settings decides alone; otherwise a verdict needs
    at least two canaries with one signature (or all 2xx that are not chat).
    Canaries that all fail transiently (5xx, 429, loading) are not run-level.
    """
    if not results or any(r.outcome == "chat" for r in results):
        return None
    answered = [r for r in results if r.outcome not in _NO_ANSWER]
    evidence = _evidence(results)
    if not answered:
        if len(results) >= 2:
            return ProviderFault(provider, "endpoint_error", "unreachable", _signature(results[0]), evidence)
        return None
    for result in answered:
        cause = _decisive(result)
        if cause is not None:
            return ProviderFault(provider, _REASON.get(cause, "endpoint_error"), cause, _signature(result), evidence)
    if all(is_transient_answer(r) for r in answered) or len(answered) < 2:
        return None
    signatures = {_signature(r) for r in answered}
    if len(signatures) == 1:
        return ProviderFault(provider, "endpoint_error", "same_refusal", signatures.pop(), evidence)
    if all(r.outcome == "invalid" for r in answered):
        return ProviderFault(provider, "endpoint_error", "not_chat", _signature(answered[0]), evidence)
    return None


def majority_fault(provider: str, results: Sequence[Any]) -> tuple[str, ProviderFault | None] | None:
    """The majority rule for one provider's primary probes.

    When one failure signature covers more than half of at least
    :data:`MAJORITY_MIN_ANSWERS` answered targets, returns ``(signature, fault)``:
    ``fault`` is set at once for a majority of 401, 402 or token-403 (the token
    was revoked mid-scan, the credits ran out); otherwise it is ``None`` and the
    caller re-probes the canaries, which decide.  ``None`` when there is no such
    majority.
    """
    answered = [r for r in results if r.outcome not in _NO_ANSWER]
    if len(answered) < MAJORITY_MIN_ANSWERS:
        return None
    counts: dict[str, list[Any]] = {}
    for result in answered:
        if result.outcome != "chat" and not is_transient_answer(result):
            counts.setdefault(_signature(result), []).append(result)
    if not counts:
        return None
    signature, hits = max(counts.items(), key=lambda item: len(item[1]))
    if len(hits) * 2 <= len(answered):
        return None
    cause = _decisive(hits[0])
    if cause in ("token", "forbidden", "payment"):
        return signature, ProviderFault(provider, _REASON[cause], cause, signature,
                                        f"{len(hits)} of {len(answered)} answered targets: {signature}")
    return signature, None


def describe_faults(faults: dict[str, ProviderFault], router_url: str, with_reason: bool = True) -> list[str]:
    """One hint per distinct fault (same reason, cause and signature), naming every provider it hit."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for provider, fault in sorted(faults.items()):
        groups.setdefault((fault.reason, fault.cause, fault.signature), []).append(provider)
    return [(f"{reason}: " if with_reason else "") + faults[providers[0]].hint(router_url, providers)
            for (reason, _, _), providers in groups.items()]
