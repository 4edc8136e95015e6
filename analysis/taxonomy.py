"""The reason taxonomy, version 2: the contract every other module speaks.

Rows are listed in precedence order (DESIGN.md): where several reasons fit a
target, the earlier row wins.  Version 2 replaced version 1 after real router
answers showed that version 1 blocked working models for faults of the account,
the token or the probe itself: run-level reasons are decided from the run (the
canaries, or most of it), never from one model; a refusal of our request is
re-probed with the request changed before anything is judged; catalog
``gated`` alone is no evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "TAXONOMY_VERSION",
    "Reason",
    "REASONS",
    "REASON_NAMES",
    "RUN_LEVEL",
    "BLOCKING",
    "TRANSIENT",
    "CHAT_PIPELINE_TAGS",
    "reason_info",
]

TAXONOMY_VERSION = 2  # stored per run: diff and --fail-on compare verdicts of one version only

CHAT_PIPELINE_TAGS = frozenset({"text-generation", "image-text-to-text"})


@dataclass(frozen=True)
class Reason:
    """One row of the taxonomy table."""

    name: str
    blocked: bool
    run_level: bool
    transient: bool
    action: str  # "block", "fix route", "fix probe", "wait", "fix setup" or "none"
    when: str
    message: str  # user-facing text; ``{model}`` is filled in


REASONS: tuple[Reason, ...] = (
    Reason("auth_error", False, True, False, "fix setup",
           "run-level: the token is rejected (401) or lacks permission (403 about the token) on the canaries or on "
           "most of the run",
           "{model} could not be checked: the gateway's Hugging Face token was refused. This is a gateway "
           "configuration problem, not a problem with {model}."),
    Reason("payment_required", False, True, False, "fix setup",
           "run-level: 402 on the canaries or on most of the run (credits exhausted)",
           "The upstream provider account has run out of credits; {model} cannot be served until billing is fixed."),
    Reason("endpoint_error", False, True, False, "fix setup",
           "run-level: 410 (a retired API) on the canaries or most of the run; the canaries all refused alike (a "
           "wrong URL, a provider switched off in the account's settings, a broken route format); or the canaries "
           "unreachable",
           "{model} was not tested: the gateway is calling a wrong or retired endpoint, or its account has the "
           "provider switched off."),
    Reason("route_mismatch", False, False, False, "fix route",
           "our route was refused, and another route to the same model answered (route check)",
           "{model} is available, but this gateway routes it incorrectly."),
    Reason("probe_error", False, False, False, "fix probe",
           "the refusal is about our request (a parameter or its value), and a re-probe with that parameter changed "
           "answered",
           "{model} works, but only with adjusted request settings."),
    Reason("gated", True, False, False, "block",
           "the refusal is about access to the repository (gated, restricted, request access); catalog `gated` "
           "alone is not evidence",
           "{model} is gated on Hugging Face and this gateway has no access to it. Choose another model."),
    Reason("non_chat_task", True, False, False, "block",
           "refused (400/404/422), and the catalog says non-chat (pipeline tag or mapping task), or the refusal "
           "says there is no chat template or no chat completions for it",
           "{model} is not a chat model, so it cannot serve chat completions. Choose a chat model."),
    Reason("provider_mapping_error", True, False, False, "block",
           "refused, and the catalog maps the probed provider `error` or `staging` (HF retests a failed mapping "
           "hourly)",
           "{model} is listed for this provider, but the provider currently reports it as unavailable. Choose "
           "another model."),
    Reason("not_found", True, False, False, "block",
           "404 and nothing above explains it",
           "{model} was not found at the upstream provider. Choose another model."),
    Reason("not_supported", True, False, False, "block",
           "any other 400/422 refusal about the model",
           "{model} is not supported by the upstream provider. Choose another model."),
    Reason("persistent_failure", True, False, False, "block",
           "a transient reason in N consecutive failing runs spanning at least H hours",
           "{model} has been failing for a long time at the upstream provider. Choose another model."),
    Reason("rate_limited", False, False, True, "wait",
           "429 after retries, or a Retry-After beyond the cap (the advertised wait is recorded)",
           "{model} is rate limited upstream right now. Try again later."),
    Reason("timeout", False, False, True, "wait",
           "no answer in time after retries; also 408",
           "{model} did not answer in time upstream. Try again later."),
    Reason("upstream_error", False, False, True, "wait",
           "5xx or 424 after retries; a temporary unavailability in any status (loading, paused); a 401/402/403/410 "
           "for one model while the canaries and the rest answer; a 403 about neither the token nor access",
           "The upstream provider for {model} is failing right now. Try again later."),
    Reason("connection_error", False, False, True, "wait",
           "no HTTP answer at all: refused, reset, DNS",
           "The upstream provider for {model} could not be reached. Try again later."),
    Reason("invalid_response", False, False, True, "wait",
           "a 2xx that is not a chat completion, a body that cannot be decoded, an unexpected status",
           "The upstream provider for {model} returned an invalid answer. Try again later."),
    Reason("ok", False, False, False, "none",
           "a 2xx chat completion (also: empty content with reasoning, finish_reason length, an SSE stream of "
           "chat chunks)",
           "{model} is working."),
)

_BY_NAME = {r.name: r for r in REASONS}
REASON_NAMES: tuple[str, ...] = tuple(_BY_NAME)
RUN_LEVEL = frozenset(r.name for r in REASONS if r.run_level)
BLOCKING = frozenset(r.name for r in REASONS if r.blocked)
TRANSIENT = frozenset(r.name for r in REASONS if r.transient)


def reason_info(name: str) -> Reason:
    """Return the taxonomy row for ``name``; raise ``KeyError`` for an unknown reason."""
    return _BY_NAME[name]
