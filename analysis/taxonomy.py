"""The reason taxonomy: the contract every other module speaks.

Rows are listed in precedence order (DESIGN.md): where several reasons fit a
model, the earlier row wins.  ``route_mismatch``, ``persistent_failure`` and
``probe_error`` extend the DESIGN table; each one exists so that a model is
*not* blocked for a fault that lies in our route or in our probe.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Reason",
    "REASONS",
    "REASON_NAMES",
    "RUN_LEVEL",
    "BLOCKING",
    "TRANSIENT",
    "CHAT_PIPELINE_TAGS",
    "reason_info",
]

CHAT_PIPELINE_TAGS = frozenset({"text-generation", "image-text-to-text"})


@dataclass(frozen=True)
class Reason:
    """One row of the taxonomy table."""

    name: str
    blocked: bool
    run_level: bool
    transient: bool
    action: str  # "block", "fix route", "wait", "fix setup" or "none"
    when: str
    message: str  # user-facing text; ``{model}`` is filled in


REASONS: tuple[Reason, ...] = (
    Reason("auth_error", False, True, False, "fix setup",
           "401 from the target: bad or missing token (run-level)",
           "The model catalog check could not authenticate; this is a gateway configuration problem, not a problem with {model}."),
    Reason("payment_required", False, True, False, "fix setup",
           "402 from the target: credits exhausted (run-level)",
           "The upstream provider account has run out of credits; {model} cannot be served until billing is fixed."),
    Reason("endpoint_error", False, True, False, "fix setup",
           "410 from the target (a retired API), or known-good canary models refused (run-level)",
           "The gateway is calling a retired or wrong endpoint; {model} was not tested."),
    Reason("route_mismatch", False, False, False, "fix route",
           "our route was refused, but another route to the same model answered",
           "{model} is available, but this gateway routes it incorrectly. The gateway team has been told."),
    Reason("probe_error", False, False, False, "fix setup",
           "a 400/422 refusal that names a request parameter (for example `max_tokens`): the probe's fault",
           "{model} rejected the health-check request itself; it was not judged. Try again later."),
    Reason("gated", True, False, False, "block",
           "403, or catalog `gated` and the probe was refused",
           "{model} is gated on Hugging Face and this gateway has no access to it. Choose another model."),
    Reason("non_chat_task", True, False, False, "block",
           "refused, and the pipeline tag or the provider mapping task is not a chat task",
           "{model} is not a chat model, so it cannot serve chat completions. Choose a chat model."),
    Reason("provider_mapping_error", True, False, False, "block",
           "refused, and the catalog maps the probed provider with status `error` or `staging`",
           "{model} is listed for this provider, but the provider currently reports it as unavailable. Choose another model."),
    Reason("not_found", True, False, False, "block",
           "404 and nothing above explains it",
           "{model} was not found at the upstream provider. Choose another model."),
    Reason("not_supported", True, False, False, "block",
           "any other 400/422 refusal (for example `model_not_supported`)",
           "{model} is not supported by the upstream provider. Choose another model."),
    Reason("persistent_failure", True, False, False, "block",
           "a transient reason in N consecutive failing runs spanning at least H hours",
           "{model} has been failing for a long time at the upstream provider. Choose another model."),
    Reason("rate_limited", False, False, True, "wait",
           "still 429 after retries",
           "{model} is rate limited upstream right now. Try again in a minute."),
    Reason("timeout", False, False, True, "wait",
           "no answer within the timeout after retries",
           "{model} did not answer in time upstream. Try again later."),
    Reason("upstream_error", False, False, True, "wait",
           "still 5xx (HTML or JSON) after retries",
           "The upstream provider for {model} is failing right now. Try again later."),
    Reason("connection_error", False, False, True, "wait",
           "connection refused or reset, no HTTP answer",
           "The upstream provider for {model} could not be reached. Try again later."),
    Reason("invalid_response", False, False, True, "wait",
           "2xx whose body is not a chat completion, or an unexpected status",
           "The upstream provider for {model} returned an invalid answer. Try again later."),
    Reason("ok", False, False, False, "none",
           "2xx with a chat completion",
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
