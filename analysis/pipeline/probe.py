"""Minimal chat completions against an OpenAI-compatible router, with bounded concurrency.

Public surface: :class:`ProbeSettings`, :class:`ProbeResult`, :func:`probe_targets`
and :func:`classify_body`.

One ``httpx.AsyncClient`` shared by 64 workers makes a 6,000-model scan about 12x
slower than raw asyncio sockets, and httpx's default transport with one client per
worker about 3x (httpcore's pool and anyio streams eat the CPU; measured in
``benchmarks/bench_probe.py``).  So each worker owns its own client, on a
one-connection keep-alive transport (:mod:`analysis.pipeline.transport`); probing
then runs at the latency bound, on par with raw asyncio sockets (see
``benchmarks/RESULTS.md``).  When a proxy is configured,
workers share small pooled httpx clients of ``CONNECTIONS_PER_CLIENT`` instead.

``concurrency`` is the global ceiling.  Under it every provider has its own
concurrency and request rate (:mod:`analysis.pipeline.ratecontrol`), and a
scheduler hands each free worker the next probe of a provider that may send now:
retries wait in the scheduler, not in a worker, so no worker sits idle behind one
provider's pacing or backoff; the provider with the largest backlog in expected
seconds goes first, and within a provider the slowest targets start first: those
the previous run took longest on (``expected_s``; a model that never answered
holds a worker for its whole chain of timeouts, which must not start last), then
the largest models by the size their id states.  A 429 that the controller caused is retried without
counting against ``retries`` (see :class:`~analysis.pipeline.ratecontrol.Decision`).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import json
import math
import random
import re
import statistics
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Awaitable, Callable, Iterable, Mapping

import httpx

from analysis.config import USER_AGENT
from analysis.errors import scrub
from analysis.pipeline.ratecontrol import RateController, provider_key
from analysis.pipeline.targets import Target
from analysis.pipeline.transport import lean_transport
from analysis.untrusted import EXCERPT_LIMIT, clean_text

__all__ = [
    "ProbeSettings",
    "Attempt",
    "ProbeResult",
    "probe_targets",
    "RouteCheck",
    "check_routes",
    "Experiment",
    "RequestChange",
    "request_payload",
    "run_experiments",
    "classify_body",
]

CONNECTIONS_PER_CLIENT = 8
RETRY_STATUSES = frozenset({408, 424, 429}) | frozenset(range(500, 600))
MESSAGE_LIMIT = 300
CODE_LIMIT = 80


@dataclass(frozen=True)
class ProbeSettings:
    """How to probe.  The token lives here only in memory; it is never stored."""

    router_url: str
    token: str | None = field(default=None, repr=False)
    concurrency: int = 8
    timeout: float = 30.0
    retries: int = 2
    max_tokens: int = 16
    backoff: float = 1.0
    backoff_cap: float = 20.0
    retry_after_cap: float = 30.0
    max_body_bytes: int = 256 * 1024
    prompt: str = "Reply with the single word OK."
    # Per-provider rate control (analysis.pipeline.ratecontrol): ``concurrency`` stays the global ceiling.
    rate_control: bool = True
    rate_pins: tuple[tuple[str, float], ...] = ()  # (provider, requests/s) fixed by the user: ``--rate P=N``
    rate_floor: float = 1.0  # requests/s below which the controller never slows a provider; 429s count there

    @property
    def chat_url(self) -> str:
        return f"{self.router_url.rstrip('/')}/chat/completions"

    @functools.cached_property
    def chat_endpoint(self) -> httpx.URL:
        """``chat_url`` parsed once: httpx parses a URL string again on every request (a tenth of the probe
        loop's CPU at 6,000 requests)."""
        return httpx.URL(self.chat_url)

    def public(self) -> dict[str, Any]:
        """Settings safe to store and show (no token)."""
        data = asdict(self)
        data.pop("token")
        data["token_set"] = bool(self.token)
        return data


@dataclass
class Attempt:
    n: int
    started_at: str
    latency_ms: float
    http_status: int | None
    outcome: str  # chat | invalid | http_error | timeout | connection
    error_code: str | None = None
    error_message: str | None = None
    retry_after: float | None = None
    waited_s: float | None = None
    # What came back when it was not a chat completion: the start of the body and the headers that explain it,
    # through the untrusted-text boundary (EXCERPT_LIMIT characters, the one cap for stored upstream text).
    body_excerpt: str | None = None
    headers: dict[str, str] | None = None
    # The token counts a chat completion's ``usage`` reported (what the provider bills), when it did.
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


# The answer headers that explain a failure; the rest are noise (and cookies).
EVIDENCE_HEADERS = ("content-type", "retry-after", "x-error-code", "x-error-message", "x-request-id",
                    "x-inference-provider", "ratelimit", "x-ratelimit-remaining", "x-ratelimit-reset", "server")


@dataclass
class ProbeResult:
    """The evidence of one target's probe: what was sent and what came back."""

    model_id: str
    provider: str
    model_string: str
    url: str
    kind: str
    http_status: int | None
    outcome: str
    error_code: str | None
    error_message: str | None
    latency_ms: float | None
    attempts: int
    attempt_log: list[Attempt]
    started_at: str
    finished_at: str
    note: str = ""
    route_for: str = ""  # for kind == "route"/"experiment": the provider of the target this probe stands in for
    settings: str = ""  # for kind == "experiment": what was changed in the request ("max_tokens=4096; stream=true")

    def billed(self) -> bool:
        """Whether this probe was answered, so billed: only a 2xx answer is (a 429, a 5xx or a refusal is not)."""
        return self.http_status is not None and 200 <= self.http_status < 300

    def usage(self) -> tuple[int, int] | None:
        """(prompt, completion) tokens of the answer, as the router reported them; ``None`` when it did not."""
        last = self.attempt_log[-1] if self.attempt_log else None
        if last is None or last.prompt_tokens is None or last.completion_tokens is None:
            return None
        return last.prompt_tokens, last.completion_tokens

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["attempt_log"] = [asdict(a) for a in self.attempt_log]
        return row


@dataclass(frozen=True)
class RequestChange:
    """One change to the probe's request, for a request experiment (see :mod:`analysis.pipeline.experiments`).

    ``max_tokens`` replaces the budget; ``completion_tokens`` sends it as
    ``max_completion_tokens`` instead of ``max_tokens``; ``stream`` asks for SSE
    (the probe closes the stream at its first chunk); ``content_parts`` sends
    the message content as a list of text parts.
    """

    max_tokens: int | None = None
    completion_tokens: bool = False
    stream: bool = False
    content_parts: bool = False

    def describe(self, settings: "ProbeSettings") -> str:
        """What differs from the default request, as stored in ``working_settings``:
        ``max_tokens=4096; stream=true``."""
        budget = self.max_tokens if self.max_tokens is not None else settings.max_tokens
        parts = [f"{'max_completion_tokens' if self.completion_tokens else 'max_tokens'}={budget}"] \
            if self.completion_tokens or self.max_tokens is not None else []
        if self.stream:
            parts.append("stream=true")
        if self.content_parts:
            parts.append("content as text parts")
        return "; ".join(parts)


def request_payload(settings: "ProbeSettings", model_string: str, change: RequestChange | None = None) -> dict[str,
                                                                                                            Any]:
    """The JSON body of a probe: a minimal chat completion, with ``change`` applied."""
    change = change or RequestChange()
    content: Any = settings.prompt
    if change.content_parts:
        content = [{"type": "text", "text": settings.prompt}]
    budget = change.max_tokens if change.max_tokens is not None else settings.max_tokens
    payload: dict[str, Any] = {"model": model_string, "messages": [{"role": "user", "content": content}]}
    payload["max_completion_tokens" if change.completion_tokens else "max_tokens"] = budget
    payload["stream"] = change.stream
    return payload


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _trim(text: str | None, limit: int = MESSAGE_LIMIT) -> str | None:
    if text is None:
        return None
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")


def parse_error_body(body: bytes, content_type: str,
                     secrets: tuple[str | None, ...] = ()) -> tuple[str | None, str | None, str | None]:
    """(error code, message, param) from an error body: OpenAI JSON, Hub JSON, HTML or text.

    ``secrets`` are scrubbed from the whole body before anything is trimmed, so a
    server that echoes the token cannot leave half of it behind a cut.
    """
    # Every string that leaves here passed the untrusted-text boundary: JSON escapes can
    # carry lone surrogates and control characters that the raw bytes did not show.
    text = scrub(body.decode("utf-8", errors="replace"), *secrets)
    try:
        data = json.loads(text)
    except ValueError:
        data = None

    def safe(value: Any, limit: int = MESSAGE_LIMIT) -> str:
        return _trim(clean_text(value, *secrets, limit=None), limit) or ""

    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            code = err.get("code") or err.get("type")
            message = err.get("message") or err.get("detail") or json.dumps(err)[:MESSAGE_LIMIT]
            param = err.get("param")
            return (safe(code, CODE_LIMIT) if code else None, safe(message),
                    safe(param, CODE_LIMIT) if param else None)
        if isinstance(err, str):
            return None, safe(err), None
        if "detail" in data:
            return None, safe(data["detail"]), None
    if "html" in content_type.lower() or text.lstrip().lower().startswith(("<!doctype", "<html")):
        title = _TITLE.search(text)
        plain = title.group(1) if title else _TAGS.sub(" ", text)
        return "html_error_page", safe("HTML page: " + " ".join(plain.split())), None
    return None, safe(text) or None, None


def _first_sse_event(text: str) -> Any:
    """The JSON of the first ``data:`` line of an SSE body (``None`` when there is none or it is not JSON)."""
    for line in text.splitlines():
        if line.startswith("data:"):
            payload = line[5:].strip()
            if payload == "[DONE]":
                return None
            try:
                return json.loads(payload)
            except ValueError:
                return None
    return None


def _is_chat_chunk(event: Any) -> bool:
    """A chat completion chunk: ``object: chat.completion.chunk`` with ``choices``, or, from a provider that leaves
    ``object`` out, choices that carry a ``delta`` (a streamed answer must never be taken for a refusal)."""
    if not isinstance(event, dict) or not isinstance(event.get("choices"), list) or "error" in event:
        return False
    if event.get("object") == "chat.completion.chunk":
        return True
    return any(isinstance(c, dict) and isinstance(c.get("delta"), dict) for c in event["choices"])


def classify_body(body: bytes, content_type: str = "") -> tuple[bool, str]:
    """Whether a 2xx body is a chat completion, and a note.

    A completion with empty content still counts: reasoning models can spend a
    tiny budget on thinking (``reasoning_content`` or ``reasoning``, often with
    ``finish_reason: length``), which is the probe's budget, not the model's
    fault.  An SSE stream of chat chunks sent although we asked for
    ``stream=false`` is an answer too, with a note.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False, "2xx body is not valid UTF-8"
    if "event-stream" in content_type.lower() or text.lstrip().startswith("data:"):
        if _is_chat_chunk(_first_sse_event(text)):
            return True, "answered with an SSE stream of chat chunks although the probe asked for stream=false"
        return False, "2xx SSE body whose first event is not a chat completion chunk"
    try:
        data = json.loads(text)
    except ValueError:
        return False, "2xx body is not valid JSON"
    if not isinstance(data, dict):
        return False, f"2xx body is a JSON {type(data).__name__}, not a chat completion"
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return False, "2xx chat completion has no choices"
    first = choices[0]
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        return False, "2xx chat completion has no message"
    if message.get("content") or message.get("tool_calls"):
        return True, ""
    finish = first.get("finish_reason")
    if message.get("reasoning_content") or message.get("reasoning"):
        return True, (f"the reply is reasoning only (finish_reason {finish}): the budget went to thinking; the model "
                      "answers")
    return True, f"empty reply (finish_reason {finish}): raise --max-tokens if this is a reasoning model"


def usage_of(body: bytes) -> tuple[int, int] | None:
    """The ``usage`` of a chat completion body: (prompt_tokens, completion_tokens), or ``None`` when absent or not
    two non-negative integers (upstream text: never trusted to be well formed)."""
    try:
        usage = json.loads(body).get("usage")
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10**9 for v in (prompt, completion)):
        return None
    return prompt, completion


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


async def _read_capped(resp: httpx.Response, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


async def _read_first_event(resp: httpx.Response, limit: int) -> bytes:
    """The body of a streamed answer up to its first ``data:`` event; the rest is never read.

    Closing the stream there is what makes a large-budget re-probe cheap: the
    provider stops generating when the connection goes.
    """
    buffer = b""
    async for chunk in resp.aiter_bytes():
        buffer += chunk
        lines = buffer.split(b"\n")
        if any(line.startswith(b"data:") for line in lines[:-1]) or len(buffer) > limit:
            break
    return buffer[:limit]


# The answer headers the rate controller reads, on every answer (a 200 can carry them too).
RATE_HEADERS = ("retry-after", "ratelimit", "x-ratelimit-remaining", "x-ratelimit-reset",
                "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")


async def _attempt_once(client: httpx.AsyncClient, settings: ProbeSettings, target: Target, n: int,
                        change: RequestChange | None = None, rate_headers: dict[str, str] | None = None) -> Attempt:
    payload = request_payload(settings, target.model_string, change)
    streamed = bool(payload.get("stream"))
    started_at = _now()
    start = time.perf_counter()
    status: int | None = None

    def done(outcome: str, code: str | None = None, message: str | None = None,
             retry_after: float | None = None, evidence: tuple[bytes, httpx.Headers] | None = None) -> Attempt:
        # Exception texts pass the untrusted-text boundary too: they may quote what was sent.
        attempt = Attempt(n, started_at, round((time.perf_counter() - start) * 1000, 1), status, outcome,
                          code, clean_text(message, settings.token, limit=MESSAGE_LIMIT) if message else message,
                          retry_after)
        if evidence is not None:
            raw, headers = evidence
            attempt.body_excerpt = clean_text(raw[: EXCERPT_LIMIT * 4], settings.token, limit=EXCERPT_LIMIT)
            attempt.headers = {name: clean_text(headers[name], settings.token, limit=200)
                               for name in EVIDENCE_HEADERS if name in headers}
        return attempt

    try:
        async with asyncio.timeout(settings.timeout):
            async with client.stream("POST", settings.chat_endpoint, json=payload) as resp:
                status = resp.status_code
                answer_headers = resp.headers
                # One pass over the headers: each lookup in httpx.Headers walks them all again.
                lowered = {name.lower(): value for name, value in answer_headers.items()}
                if rate_headers is not None:
                    rate_headers.update((name, lowered[name]) for name in RATE_HEADERS if name in lowered)
                content_type = lowered.get("content-type", "")
                retry_after = _retry_after_seconds(lowered.get("retry-after"))
                if streamed and 200 <= status < 300:
                    body, oversized = await _read_first_event(resp, settings.max_body_bytes), False
                else:
                    body, oversized = await _read_capped(resp, settings.max_body_bytes)
    except (TimeoutError, httpx.TimeoutException):
        where = "before any answer" if status is None else f"reading the body after HTTP {status}"
        return done("timeout", "timeout", f"no complete answer within {settings.timeout:g}s ({where})")
    except httpx.DecodingError as exc:
        # An answer came, but its Content-Encoding lies: the upstream's fault, not the network's.
        return done("invalid", "undecodable_body", f"HTTP {status} body cannot be decoded: {exc}")
    except httpx.HTTPError as exc:
        where = "no HTTP answer" if status is None else f"connection closed mid-body after HTTP {status}"
        return done("connection", type(exc).__name__, f"{where}: {exc}")
    except OSError as exc:
        return done("connection", type(exc).__name__, f"no HTTP answer: {exc}")
    if 200 <= status < 300:
        if oversized:
            return done("invalid", "oversized_body", f"2xx body larger than {settings.max_body_bytes // 1024} KB")
        text = body.decode("utf-8", errors="replace") if streamed else ""
        if streamed and ("event-stream" in content_type.lower() or text.lstrip().startswith(("data:", ":", "event:"))):
            if _is_chat_chunk(_first_sse_event(text)):
                return done("chat", None, "streamed: the first chunk is a chat completion chunk (stream closed there)")
            return done("invalid", "not_chat_completion", "2xx stream whose first event is not a chat completion chunk",
                        evidence=(body, answer_headers))
        if streamed:  # a provider that ignored stream=true and answered in one piece: judge that piece
            is_chat, note = classify_body(body, content_type)
            note = note or "answered in one piece although the probe asked for stream=true"
            return done("chat" if is_chat else "invalid", None if is_chat else "not_chat_completion", note,
                        evidence=None if is_chat else (body, answer_headers))
        is_chat, note = classify_body(body, content_type)
        if is_chat:
            answered = done("chat", None, note or None)
            answered.prompt_tokens, answered.completion_tokens = usage_of(body) or (None, None)
            return answered
        return done("invalid", "not_chat_completion", note or None, evidence=(body, answer_headers))
    code, message, param = parse_error_body(body, content_type, (settings.token,))
    if param:
        message = f"{message} [param={param}]"
    return done("http_error", code, message, retry_after, evidence=(body, answer_headers))


def _retry_plan(settings: ProbeSettings, attempt: Attempt, counted: int) -> tuple[float | None, str]:
    """(seconds to wait before the next attempt, or None to stop; a note) after a counted attempt."""
    retryable = attempt.outcome in ("timeout", "connection") or (
        attempt.outcome == "http_error" and attempt.http_status in RETRY_STATUSES)
    if not retryable or counted > settings.retries:
        return None, ""
    if attempt.retry_after is not None and attempt.retry_after > settings.retry_after_cap:
        # Waiting out a day-long Retry-After 30 s at a time only delays the verdict: stop at once.
        return None, (f"Retry-After {attempt.retry_after:g}s advertised, beyond the cap of "
                      f"{settings.retry_after_cap:g}s: not retried")
    if attempt.retry_after is not None:
        return attempt.retry_after, ""
    return min(settings.backoff_cap, settings.backoff * 2 ** (counted - 1)) * (0.5 + random.random()), ""


def _result(settings: ProbeSettings, target: Target, kind: str, change: RequestChange | None, log: list[Attempt],
            started_at: str, note: str, free: int) -> ProbeResult:
    last = log[-1]
    if last.outcome == "chat" and last.error_message:
        note = last.error_message
    elif not note and last.retry_after is not None and last.retry_after > settings.retry_after_cap:
        note = f"Retry-After {last.retry_after:g}s advertised, beyond the cap of {settings.retry_after_cap:g}s"
    if free:
        slowed = (f"{free} 429 answer(s) came while the provider was being slowed down to its limit: retried "
                  "without counting against the retries")
        note = f"{note}; {slowed}" if note else slowed
    return ProbeResult(
        model_id=target.model_id, provider=target.provider, model_string=target.model_string,
        url=settings.chat_url, kind=kind, http_status=last.http_status, outcome=last.outcome,
        error_code=last.error_code, error_message=None if last.outcome == "chat" else last.error_message,
        latency_ms=last.latency_ms, attempts=len(log), attempt_log=log, started_at=started_at,
        finished_at=_now(), note=note, settings=change.describe(settings) if change is not None else "",
    )


@dataclass(frozen=True)
class RouteCheck:
    """Other routes to try, in order, for a target whose own route was refused."""

    target: Target
    routes: tuple[Target, ...]


@dataclass(frozen=True)
class Experiment:
    """One re-probe of a refused target with its request changed (at most one per target)."""

    target: Target
    change: RequestChange


Job = list[tuple[Target, str, str, "RequestChange | None"]]
OnResult = Callable[[ProbeResult], Awaitable[None] | None]


async def probe_targets(targets: Iterable[Target], settings: ProbeSettings, on_result: OnResult | None = None, *,
                        kind: str = "primary", expected_s: Mapping[str, float] | None = None) -> list[ProbeResult]:
    """Probe every target with at most ``settings.concurrency`` requests in flight.

    Results are handed to ``on_result`` as they arrive (for progress and batched
    storage) and returned.  No single answer stops the others: whether a fault is
    run-level is decided from the run (:mod:`analysis.pipeline.canaries`).
    ``expected_s`` (model string -> seconds, e.g. what the previous run took) only
    orders the work: the slowest start first.
    """
    jobs: list[Job] = [[(target, kind, "", None)] for target in targets]
    return await _run_jobs(jobs, settings, on_result, stop_at_chat=False, expected_s=expected_s)


async def check_routes(checks: Iterable[RouteCheck], settings: ProbeSettings,
                       on_result: OnResult | None = None) -> list[ProbeResult]:
    """Try each check's routes in order until one answers a chat completion.

    Every attempt is returned (``kind="route"``, ``route_for`` = the refused
    target's provider), so the evidence shows what was tried.
    """
    jobs: list[Job] = [[(route, "route", check.target.provider, None) for route in check.routes] for check in checks]
    return await _run_jobs(jobs, settings, on_result, stop_at_chat=True)


async def run_experiments(experiments: Iterable[Experiment], settings: ProbeSettings,
                          on_result: OnResult | None = None) -> list[ProbeResult]:
    """Re-probe each target once with its request changed (``kind="experiment"``, ``settings`` says how)."""
    jobs: list[Job] = [[(e.target, "experiment", e.target.provider, e.change)] for e in experiments]
    return await _run_jobs(jobs, settings, on_result, stop_at_chat=False)


class _NoCookies(httpx.Cookies):
    """A cookie store that keeps nothing."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _ProbeClient(httpx.AsyncClient):
    """An ``AsyncClient`` without cookies: a cookie one upstream answer sets must not ride along with the next
    model's probe, and reading every answer's ``Set-Cookie`` cost a tenth of the probe loop's CPU."""

    _none = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._none

    @cookies.setter
    def cookies(self, cookies: Any) -> None:  # nothing is kept
        return None


def _clients(settings: ProbeSettings) -> list[httpx.AsyncClient]:
    """One lean client per worker; pooled clients of a few connections when a proxy applies."""
    headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json"}
    if settings.token:
        headers["Authorization"] = f"Bearer {settings.token}"
    timeout = httpx.Timeout(settings.timeout)
    workers = max(1, settings.concurrency)
    if lean_transport(settings.chat_url) is not None:
        # One TLS context for all: building one costs ~20 ms.
        context = httpx.create_ssl_context() if settings.chat_url.startswith("https:") else None
        return [_ProbeClient(headers=headers, timeout=timeout, follow_redirects=False,
                             transport=lean_transport(settings.chat_url, context)) for _ in range(workers)]
    limits = httpx.Limits(max_connections=CONNECTIONS_PER_CLIENT, max_keepalive_connections=CONNECTIONS_PER_CLIENT)
    return [_ProbeClient(headers=headers, timeout=timeout, limits=limits, follow_redirects=False)
            for _ in range(math.ceil(workers / CONNECTIONS_PER_CLIENT))]


_SIZE = re.compile(r"(?<![0-9a-z.])(?:(\d+)x)?(\d+(?:\.\d+)?)([bm])(?![a-z])", re.IGNORECASE)


def size_hint(model_id: str) -> float:
    """The parameter count in billions that a model id states (``Llama-3.1-70B`` -> 70, ``8x7B`` -> 56,
    ``Qwen3-235B-A22B`` -> 235, ``135M`` -> 0.135); 0 when it states none.  Large models answer slowly."""
    best = 0.0
    for experts, number, unit in _SIZE.findall(model_id.rsplit("/", 1)[-1]):
        value = float(number) * (int(experts) if experts else 1) / (1000.0 if unit.lower() == "m" else 1.0)
        best = max(best, value)
    return best


def slow_first(jobs: list[Job], expected_s: Mapping[str, float]) -> list[int]:
    """The jobs' indices, likely-slowest first (the longest-first rule that keeps a long job from ending a run).

    Measured beats guessed: a job's expected seconds come from ``expected_s`` (its first route's model string);
    a job without one counts as the median of those known, so a model never seen sits between the known-slow and
    the known-fast.  Ties (and every job, when nothing is known) go largest model first, by the size its id states.
    """
    known = [expected_s[job[0][0].model_string] for job in jobs if job[0][0].model_string in expected_s]
    typical = statistics.median(known) if known else 0.0
    return sorted(range(len(jobs)), key=lambda i: (-expected_s.get(jobs[i][0][0].model_string, typical),
                                                   -size_hint(jobs[i][0][0].model_id)))


@dataclass
class _Step:
    """One job's current probe: which route of the job, its attempts so far and when it may go next."""

    job: Job
    index: int
    log: list[Attempt] = field(default_factory=list)
    started_at: str = ""
    not_before: float = 0.0
    free: int = 0  # 429s the controller caused, retried without counting
    note: str = ""

    @property
    def key(self) -> str:
        return provider_key(self.job[self.index][0].provider)


class _Scheduler:
    """Hands workers the next probe whose provider may send now.

    Every provider has its own queue (likely-slow targets first) and due retries
    (a retry waits here, not in a worker); a worker takes from the ready provider
    with the largest backlog in expected seconds, so no worker sits idle behind
    one provider's pacing and the slow providers start first.
    """

    def __init__(self, jobs: list[Job], controller: RateController | None, clock: Callable[[], float],
                 expected_s: Mapping[str, float] | None = None) -> None:
        self.controller = controller
        self.clock = clock
        self.fresh: dict[str, deque[_Step]] = {}
        self.due: dict[str, list[tuple[float, int, _Step]]] = {}
        self.counter = 0
        self.waiting = 0
        self.running = 0
        self.cond = asyncio.Condition()
        # Slow first within each provider's queue: a long job started last ends the run late.
        for i in slow_first(jobs, expected_s or {}):
            step = _Step(jobs[i], 0)
            self.fresh.setdefault(step.key, deque()).append(step)
            self.waiting += 1

    def _backlog(self, key: str) -> float:
        count = len(self.fresh.get(key, ())) + len(self.due.get(key, ()))
        if self.controller is None:
            return float(count)
        latency = self.controller.latency(key) or 1.0
        return count * latency / max(1, self.controller.limits(key).concurrency)

    def _pick(self) -> tuple[_Step | None, float]:
        """The step to send now, or None and the seconds until one may be ready (inf: until an answer)."""
        now = self.clock()
        best: tuple[float, str] | None = None
        soonest = math.inf
        for key in set(self.fresh) | set(self.due):
            fresh, due = self.fresh.get(key), self.due.get(key)
            if not fresh and not due:
                continue
            item_wait = 0.0 if fresh or (due and due[0][0] <= now) else (due[0][0] - now if due else math.inf)
            wait = max(item_wait, self.controller.delay(key) if self.controller is not None else 0.0)
            if wait > 0:
                soonest = min(soonest, wait)
                continue
            score = self._backlog(key)
            if best is None or score > best[0]:
                best = (score, key)
        if best is None:
            return None, soonest
        key = best[1]
        due = self.due.get(key)
        if due and due[0][0] <= now:
            step = heapq.heappop(due)[2]
        else:
            step = self.fresh[key].popleft()
        return step, 0.0

    async def next(self) -> tuple[_Step, float] | None:
        """The next step to send and its send time, or None when every job is done."""
        async with self.cond:
            while True:
                if self.waiting == 0 and self.running == 0:
                    self.cond.notify_all()
                    return None
                step, wait = self._pick() if self.waiting else (None, math.inf)
                if step is not None:
                    self.waiting -= 1
                    self.running += 1
                    sent = self.controller.on_send(step.key) if self.controller is not None else self.clock()
                    return step, sent
                try:
                    await asyncio.wait_for(self.cond.wait(), None if wait == math.inf else max(wait, 0.001))
                except TimeoutError:
                    pass

    async def finish(self, again: _Step | None, front: bool = False) -> None:
        """A step's attempt is over: ``again`` waits for its next attempt or is the job's next route."""
        async with self.cond:
            self.running -= 1
            if again is not None:
                self.waiting += 1
                if again.not_before > self.clock():
                    self.counter += 1
                    heapq.heappush(self.due.setdefault(again.key, []), (again.not_before, self.counter, again))
                elif front:
                    self.fresh.setdefault(again.key, deque()).appendleft(again)
                else:
                    self.counter += 1
                    heapq.heappush(self.due.setdefault(again.key, []), (again.not_before, self.counter, again))
            self.cond.notify_all()


async def _run_jobs(jobs: list[Job], settings: ProbeSettings, on_result: OnResult | None,
                    stop_at_chat: bool, controller: RateController | None = None,
                    clock: Callable[[], float] = time.monotonic,
                    expected_s: Mapping[str, float] | None = None) -> list[ProbeResult]:
    if controller is None and settings.rate_control:
        controller = RateController(settings.concurrency, floor=settings.rate_floor, pinned=dict(settings.rate_pins),
                                    clock=clock, retry_after_cap=settings.retry_after_cap)
    scheduler = _Scheduler(jobs, controller, clock, expected_s)
    results: list[ProbeResult] = []
    clients = _clients(settings)
    n_clients = len(clients)

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            picked = await scheduler.next()
            if picked is None:
                return
            step, sent = picked
            target, kind, route_for, change = step.job[step.index]
            if not step.log:
                step.started_at = _now()
            headers: dict[str, str] = {}
            answered = False
            try:
                attempt = await _attempt_once(client, settings, target, len(step.log) + 1, change, headers)
                answered = True
            finally:
                if not answered and controller is not None:
                    controller.on_cancel(step.key)
            step.log.append(attempt)
            free_retry = False
            if controller is not None:
                decision = controller.on_answer(step.key, target.model_string, attempt.http_status, headers, sent,
                                                attempt.latency_ms / 1000.0, step.free)
                free_retry = decision.free_retry and attempt.http_status == 429
            if free_retry:
                # The controller caused this 429 (the provider was above its floor): it has slowed down; go again,
                # paced by it, without counting the attempt.
                step.free += 1
                attempt.waited_s = 0.0
                step.not_before = clock()
                await scheduler.finish(step)
                continue
            wait, note = _retry_plan(settings, attempt, len(step.log) - step.free)
            step.note = note or step.note
            if wait is not None:
                attempt.waited_s = round(wait, 3)
                step.not_before = clock() + wait
                await scheduler.finish(step)
                continue
            result = _result(settings, target, kind, change, step.log, step.started_at, step.note, step.free)
            result.route_for = route_for
            results.append(result)
            following = None
            if not (stop_at_chat and result.outcome == "chat") and step.index + 1 < len(step.job):
                following = _Step(step.job, step.index + 1)
            try:
                if on_result is not None:
                    maybe = on_result(result)
                    if asyncio.iscoroutine(maybe):
                        await maybe
            finally:
                await scheduler.finish(following, front=True)

    workers = [asyncio.create_task(worker(clients[i % n_clients])) for i in range(max(1, settings.concurrency))]
    try:
        await asyncio.gather(*workers)
    finally:
        # Also reached on cancellation (Ctrl-C) or a worker's error: abandon in-flight probes, close sockets.
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for client in clients:
            await client.aclose()
    return results
