"""Every sentence a verdict is told in, in one place: the "why" of a finding (:func:`explain`), the headline
of its detail page (:func:`verdict`) and what each action means (:data:`ACTION_TEXT`).  The dashboard, the
reports and the CLI word verdicts through here; the user-facing messages are the taxonomy's.  Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from analysis.taxonomy import BLOCKING, REASON_NAMES, RUN_LEVEL, TRANSIENT, reason_info

__all__ = ["ACTION_TEXT", "Verdict", "explain", "verdict", "word", "spend_sentence"]

# Upstream words (reasons, run failure kinds) go into headlines only if they look like ours.
_WORD = re.compile(r"[a-z][a-z0-9_]{0,39}")


def word(value: Any) -> str:
    """``value`` if it is a short snake_case word (a reason name), else ``unknown``: safe in a markdown headline."""
    return value if isinstance(value, str) and _WORD.fullmatch(value) else "unknown"


ACTION_TEXT = {
    "block": "block it",
    "fix route": "fix our route to it instead of blocking it",
    "wait": "wait and scan again; a transient failure never blocks a model on its own",
    "fix probe": "keep it listed and send it the request settings that worked; nothing is blocked",
    "fix setup": "fix our setup (token, credits, endpoint or account settings) and scan again; nothing is blocked",
    "none": "nothing to do: keep it listed",
}


@dataclass(frozen=True)
class Verdict:
    """The headline of a model detail page: ``kind`` picks the colour, ``title`` says it (no upstream text)."""

    kind: str  # works | blocked | wait | fix | not_judged | predicted
    title: str


def verdict(finding: dict[str, Any]) -> Verdict:
    """The verdict of one finding in a sentence, from its reason and blocked flag."""
    reason = word(finding.get("reason"))
    if finding.get("predicted"):
        return Verdict("predicted", f"Predicted {reason} from metadata only: no request was sent, so it blocks "
                                    "nothing.")
    if reason == "ok":
        return Verdict("works", "Works: the router answered a chat completion.")
    if finding.get("carried") and finding.get("blocked"):
        return Verdict("blocked", f"Blocked (carried forward): {reason} in the provider's last successful run; this "
                                  "run had a run-level fault for the provider and did not judge it.")
    if reason in RUN_LEVEL:
        return Verdict("not_judged", f"Not judged: a run-level fault ({reason}) of the token, credits, endpoint or "
                                     "account settings, not of this model. Nothing was blocked.")
    if reason not in REASON_NAMES:
        return Verdict("fix", f"{reason}: not a reason this tool knows. Not blocked by it.")
    when = reason_info(reason).when
    if finding.get("blocked"):
        return Verdict("blocked", f"Blocked: {reason}, {when}.")
    if reason in TRANSIENT:
        return Verdict("wait", f"Not blocked, transient: {reason}, {when}. Wait and scan again.")
    if reason == "route_mismatch":
        return Verdict("fix", "Not blocked: the model works through another route. Fix the gateway's routing.")
    if reason == "probe_error":
        return Verdict("fix", "Not blocked: it works with adjusted request settings. Send it those settings, or fix "
                              "the probe's.")
    return Verdict("fix", f"{reason}, not blocked in this run.")


def _status_text(finding: dict[str, Any]) -> str:
    status = finding.get("http_status")
    code = finding.get("error_code")
    if status is None or (isinstance(status, float) and status != status):
        return "no HTTP answer"
    return f"HTTP {int(status)}" + (f" {code}" if code else "")


def explain(evidence: dict[str, Any]) -> str:
    """The plain-language "why" of a verdict, from the evidence only."""
    f = evidence["finding"]
    reason = f["reason"]
    model = f["model_id"]
    route = f.get("model_string") or model
    url = evidence["request"]["url"]
    provider = f.get("provider") or "the router's choice"
    tag = f.get("pipeline_tag") or "missing"
    mstatus = f.get("mapping_status") or "unknown"
    mtask = f.get("mapping_task") or "unknown"
    listed = evidence.get("in_router_list")
    listed_text = {True: "the router lists it", False: "the router does not list it"}.get(
        bool(listed), "the router list was not read") if listed is not None else "the router list was not read"
    catalog_text = f"pipeline tag {tag}; {provider} mapping {mstatus} (task {mtask}); {listed_text}"
    if f.get("predicted"):
        lead = (f"Predicted from metadata only (no request was sent): {reason}. "
                f"Catalog: {catalog_text}. Run a probing scan to confirm; predictions never block.")
        return lead
    if reason == "ok":
        text = (f"{model} works: {url} answered a chat completion for '{route}'"
                f" in {f.get('latency_ms') or '?'} ms. Catalog: {catalog_text}.")
    elif reason == "route_mismatch":
        text = (f"Our route '{route}' was refused ({_status_text(f)}), but '{f.get('working_route')}' answered with a "
                f"chat completion. The model works; fix the gateway's routing instead of blocking it. "
                f"Catalog: {catalog_text}.")
    elif reason == "probe_error":
        text = (f"The refusal ({_status_text(f)}) was about our health-check request, not the model: the same request "
                f"with {f.get('working_settings') or 'adjusted settings'} answered with a chat completion. Keep it "
                "listed and send it those settings (or change the probe's); do not block it.")
    elif reason == "gated":
        text = (f"The answer ({_status_text(f)}) says access to the repository is restricted (gated): the token's "
                "account has not been granted access. Block it, or request access on its Hugging Face page.")
    elif reason == "non_chat_task":
        text = (f"The router refused the chat completion ({_status_text(f)}), and the catalog (pipeline tag {tag}, "
                f"{provider} mapping task {mtask}) or the refusal itself (no chat template, no chat completions) "
                "says it is not a chat model; block it.")
    elif reason == "provider_mapping_error":
        text = (f"The router refused '{route}' ({_status_text(f)}) and the catalog maps {provider} with status "
                f"{mstatus}: the provider is not serving it. Block it; Hugging Face retests a failed mapping every "
                "hour, so the next scan after it turns live unblocks it.")
    elif reason == "not_found":
        text = (f"The router answered 404 for '{route}' and nothing in the catalog explains it ({catalog_text}). "
                "Block it.")
    elif reason == "not_supported":
        text = (f"The router refused '{route}' ({_status_text(f)}); the catalog does not explain it "
                f"({catalog_text}). Block it.")
    elif reason == "persistent_failure":
        text = (f"A transient failure has lasted: {f.get('note') or ''}. Block it until it answers again; one ok "
                "clears it.")
    elif reason in TRANSIENT:
        text = (f"A transient failure ({reason}: {_status_text(f)} after {f.get('attempts')} attempts). This alone "
                "never blocks a model: wait and scan again.")
    elif reason in RUN_LEVEL:
        text = (f"Not judged: a run-level fault ({reason}) of the token, the credits, the endpoint or the account's "
                f"provider settings, seen on the canaries (or most of the run), not a fault of this model. Nothing "
                f"of it was blocked. {f.get('detail') or ''}".rstrip())
    else:
        text = f"{reason}: {f.get('detail')}"
    if f.get("carried"):
        text = (f"Carried forward: {f.get('note') or 'from the last successful run'}. The provider's part of this run "
                f"had a run-level fault, so its last verdict stands ({reason}) until a run judges it again. " + text)
    history = evidence.get("history")
    if history is not None and len(history):
        run_id = evidence["run"].id
        run_level = history[history["reason"].isin(RUN_LEVEL) & (history["run_status"] == "failed")
                            & (history["run_id"] < run_id)]
        if len(run_level) and reason not in RUN_LEVEL and reason not in BLOCKING:
            ids = ", ".join(f"#{int(r)}" for r in run_level["run_id"])
            reasons = ", ".join(sorted(set(run_level["reason"])))
            text += (f" Earlier run-level failures ({reasons} in run {ids}) were about the endpoint or setup, "
                     "not this model, and blocked nothing.")
    if f.get("note") and not f.get("carried"):
        text += f" Note: {f['note']}."
    return text


def spend_sentence(prompt_tokens: int | None, completion_tokens: int | None, spent_usd: float | None,
                   unpriced_answers: int | None) -> str | None:
    """What a run's answers cost, in one sentence (CLI summary, Overview, fleet report); ``None`` before any."""
    if spent_usd is None and not prompt_tokens and not completion_tokens:
        return None
    tokens = (f"{prompt_tokens or 0:,} prompt + {completion_tokens or 0:,} completion tokens reported by the router"
              if prompt_tokens or completion_tokens else "no token usage reported by the router")
    unpriced = (f"; {unpriced_answers} answered route(s) had no price and are not counted" if unpriced_answers
                else "")
    return (f"Estimated spend ${spent_usd or 0:.6f} ({tokens}; prices from the router's list, USD per million "
            f"tokens{unpriced}).")
