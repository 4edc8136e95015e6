"""Request experiments: what to change in the probe's request when a refusal may be about it.  Pure: no I/O.

"Experiment before verdict": a refusal that names a parameter we sent
(``max_tokens``, ``max_new_tokens``, ``max_completion_tokens``, ``stream``,
``messages``, or speaks of the budget or thinking) is re-probed once with what
it names changed.  If that answers, the verdict is ``probe_error`` with the
working settings; if not, the model-level rows judge the original refusal.
"""

from __future__ import annotations

import re

from analysis.config import DEFAULT_MAX_TOKENS_RETRY
from analysis.pipeline.diagnose import request_fault
from analysis.pipeline.probe import RequestChange

__all__ = ["DEFAULT_MAX_TOKENS_RETRY", "plan_change"]

_UPPER = re.compile(r"(?:<=|≤|at most|less than or equal to|must not exceed|not exceed|no more than|"
                    r"maximum (?:of |is )?|max(?:imum)? allowed (?:is )?)\s*`?(\d+)", re.IGNORECASE)
_LOWER = re.compile(r"(?:>=|≥|at least|greater than or equal to|minimum (?:of |is )?)\s*`?(\d+)", re.IGNORECASE)
_INPUTS = re.compile(r"(\d+)\s*`?(?:inputs?|input tokens|prompt tokens)`?", re.IGNORECASE)


def plan_change(status: int | None, code: str | None, message: str | None, *, max_tokens: int,
                max_tokens_retry: int = DEFAULT_MAX_TOKENS_RETRY) -> RequestChange | None:
    """The one change to try for this refusal, or ``None`` when it is not about our request.

    - a refusal about streaming: ``stream=true``;
    - a refusal of ``max_tokens`` that names ``max_completion_tokens``: that parameter instead;
    - a budget refusal that states a limit ("<= N", "at most N"): a budget inside it (minus
      the input tokens it reports);
    - any other budget refusal (too small, "budget", "thinking"): the large budget
      ``max_tokens_retry`` (or the stated minimum, if larger), streamed so the probe can
      close the stream at its first chunk and the large budget costs almost nothing;
    - a ``messages`` shape refusal: content as a list of text parts.
    """
    fault = request_fault(status, code, message)
    if fault is None:
        return None
    text = f"{code or ''} {message or ''}"
    if fault == "stream":
        return RequestChange(stream=True)
    if "max_completion_tokens" in text and fault in ("max_tokens", "max_completion_tokens"):
        return RequestChange(completion_tokens=True)
    if fault in ("max_tokens", "max_new_tokens", "max_completion_tokens"):
        upper = _UPPER.search(text)
        if upper is not None:
            inputs = _INPUTS.search(text[upper.end():]) or _INPUTS.search(text)
            budget = int(upper.group(1)) - (int(inputs.group(1)) if inputs else 0)
            if budget >= max_tokens:  # the limit allows what we sent: a shared limit we cannot read
                budget = max_tokens // 2
            return RequestChange(max_tokens=max(1, budget))
        lower = _LOWER.search(text)
        budget = max(max_tokens_retry, int(lower.group(1)) if lower else 0)
        return RequestChange(max_tokens=budget, stream=True)
    if fault == "messages":
        return RequestChange(content_parts=True)
    return None
