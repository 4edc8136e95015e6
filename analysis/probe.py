"""Minimal chat completions against an OpenAI-compatible router, with bounded concurrency.

Public surface: :class:`ProbeSettings`, :class:`ProbeResult`, :func:`probe_targets`
and :func:`classify_body`.

One ``httpx.AsyncClient`` shared by many connections tops out near 125 requests/s
here (httpcore's pool bookkeeping grows with the pool and eats the CPU).  So each
worker owns its own client, on a one-connection keep-alive transport
(:mod:`analysis.transport`); probing then runs at the latency bound, on par with
raw asyncio sockets (see ``benchmarks/RESULTS.md``).  When a proxy is configured,
workers share small pooled httpx clients of ``CONNECTIONS_PER_CLIENT`` instead.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Awaitable, Callable, Iterable

import httpx

from .catalog import USER_AGENT, Target
from .errors import scrub
from .untrusted import clean_text
from .transport import lean_transport

__all__ = [
    "ProbeSettings",
    "Attempt",
    "ProbeResult",
    "probe_targets",
    "RouteCheck",
    "check_routes",
    "classify_body",
    "RUN_LEVEL_STATUSES",
]

CONNECTIONS_PER_CLIENT = 8
RUN_LEVEL_STATUSES = frozenset({401, 402, 410})
RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
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

    @property
    def chat_url(self) -> str:
        return f"{self.router_url.rstrip('/')}/chat/completions"

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
    route_for: str = ""  # for kind == "route": the provider of the target this route stands in for

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["attempt_log"] = [asdict(a) for a in self.attempt_log]
        return row


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


def classify_body(body: bytes) -> tuple[bool, str]:
    """Whether a 2xx body is a chat completion, and a note.

    A completion with empty content still counts: reasoning models can spend a
    tiny budget on thinking, which is the probe's budget, not the model's fault.
    """
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
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
    content = message.get("content")
    if not content and not message.get("reasoning_content") and not message.get("tool_calls"):
        return True, "empty reply: raise --max-tokens if this is a reasoning model"
    return True, ""


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


async def _attempt_once(client: httpx.AsyncClient, settings: ProbeSettings, target: Target, n: int) -> Attempt:
    payload = {
        "model": target.model_string,
        "messages": [{"role": "user", "content": settings.prompt}],
        "max_tokens": settings.max_tokens,
        "stream": False,
    }
    started_at = _now()
    start = time.perf_counter()
    status: int | None = None

    def done(outcome: str, code: str | None = None, message: str | None = None,
             retry_after: float | None = None) -> Attempt:
        # Exception texts are scrubbed here too: they may quote what was sent.
        return Attempt(n, started_at, round((time.perf_counter() - start) * 1000, 1), status, outcome,
                       code, clean_text(message, settings.token, limit=MESSAGE_LIMIT) if message else message,
                       retry_after)

    try:
        async with asyncio.timeout(settings.timeout):
            async with client.stream("POST", settings.chat_url, json=payload) as resp:
                status = resp.status_code
                body, oversized = await _read_capped(resp, settings.max_body_bytes)
                content_type = resp.headers.get("content-type", "")
                retry_after = _retry_after_seconds(resp.headers.get("retry-after"))
    except (TimeoutError, httpx.TimeoutException):
        where = "before any answer" if status is None else f"reading the body after HTTP {status}"
        return done("timeout", "timeout", f"no complete answer within {settings.timeout:g}s ({where})")
    except httpx.HTTPError as exc:
        where = "no HTTP answer" if status is None else f"connection closed mid-body after HTTP {status}"
        return done("connection", type(exc).__name__, f"{where}: {exc}")
    except OSError as exc:
        return done("connection", type(exc).__name__, f"no HTTP answer: {exc}")
    if 200 <= status < 300:
        if oversized:
            return done("invalid", "oversized_body", f"2xx body larger than {settings.max_body_bytes // 1024} KB")
        is_chat, note = classify_body(body)
        return done("chat" if is_chat else "invalid", None if is_chat else "not_chat_completion", note or None)
    code, message, param = parse_error_body(body, content_type, (settings.token,))
    if param:
        message = f"{message} [param={param}]"
    return done("http_error", code, message, retry_after)


async def _probe_one(client: httpx.AsyncClient, settings: ProbeSettings, target: Target, kind: str) -> ProbeResult:
    started_at = _now()
    log: list[Attempt] = []
    for n in range(1, settings.retries + 2):
        attempt = await _attempt_once(client, settings, target, n)
        log.append(attempt)
        retryable = attempt.outcome in ("timeout", "connection") or (
            attempt.outcome == "http_error" and attempt.http_status in RETRY_STATUSES)
        if not retryable or n > settings.retries:
            break
        if attempt.retry_after is not None:
            wait = min(attempt.retry_after, settings.retry_after_cap)
        else:
            wait = min(settings.backoff_cap, settings.backoff * 2 ** (n - 1)) * (0.5 + random.random())
        attempt.waited_s = round(wait, 3)
        await asyncio.sleep(wait)
    last = log[-1]
    note = ""
    if last.outcome == "chat" and last.error_message:
        note = last.error_message
    if last.retry_after is not None and last.retry_after > settings.retry_after_cap:
        note = f"Retry-After {last.retry_after:g}s exceeds the cap of {settings.retry_after_cap:g}s"
    return ProbeResult(
        model_id=target.model_id, provider=target.provider, model_string=target.model_string,
        url=settings.chat_url, kind=kind, http_status=last.http_status, outcome=last.outcome,
        error_code=last.error_code, error_message=None if last.outcome == "chat" else last.error_message,
        latency_ms=last.latency_ms, attempts=len(log), attempt_log=log, started_at=started_at,
        finished_at=_now(), note=note,
    )


@dataclass(frozen=True)
class RouteCheck:
    """Other routes to try, in order, for a target whose own route was refused."""

    target: Target
    routes: tuple[Target, ...]


async def probe_targets(
    targets: Iterable[Target],
    settings: ProbeSettings,
    on_result: Callable[[ProbeResult], Awaitable[None] | None] | None = None,
    *,
    kind: str = "primary",
    stop_on_run_level: bool = True,
) -> list[ProbeResult]:
    """Probe every target with at most ``settings.concurrency`` requests in flight.

    Results are handed to ``on_result`` as they arrive (for progress and batched
    storage) and returned.  When a target answers 401, 402 or 410 the scan is
    run-level broken: no new probes start and the in-flight ones are abandoned.
    """
    jobs = [[(target, kind, "")] for target in targets]
    return await _run_jobs(jobs, settings, on_result, stop_on_run_level, stop_at_chat=False)


async def check_routes(
    checks: Iterable[RouteCheck],
    settings: ProbeSettings,
    on_result: Callable[[ProbeResult], Awaitable[None] | None] | None = None,
) -> list[ProbeResult]:
    """Try each check's routes in order until one answers a chat completion.

    Every attempt is returned (``kind="route"``, ``route_for`` = the refused
    target's provider), so the evidence shows what was tried.
    """
    jobs = [[(route, "route", check.target.provider) for route in check.routes] for check in checks]
    return await _run_jobs(jobs, settings, on_result, True, stop_at_chat=True)


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
        return [httpx.AsyncClient(headers=headers, timeout=timeout, follow_redirects=False,
                                  transport=lean_transport(settings.chat_url, context)) for _ in range(workers)]
    limits = httpx.Limits(max_connections=CONNECTIONS_PER_CLIENT, max_keepalive_connections=CONNECTIONS_PER_CLIENT)
    return [httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits, follow_redirects=False)
            for _ in range(math.ceil(workers / CONNECTIONS_PER_CLIENT))]


async def _run_jobs(
    jobs: list[list[tuple[Target, str, str]]],
    settings: ProbeSettings,
    on_result: Callable[[ProbeResult], Awaitable[None] | None] | None,
    stop_on_run_level: bool,
    stop_at_chat: bool,
) -> list[ProbeResult]:
    queue = list(reversed(jobs))
    results: list[ProbeResult] = []
    stop = asyncio.Event()
    clients = _clients(settings)
    n_clients = len(clients)

    async def worker(client: httpx.AsyncClient) -> None:
        while queue and not stop.is_set():
            for target, kind, route_for in queue.pop():
                result = await _probe_one(client, settings, target, kind)
                result.route_for = route_for
                if stop.is_set():
                    return
                results.append(result)
                if stop_on_run_level and result.http_status in RUN_LEVEL_STATUSES and result.outcome == "http_error":
                    stop.set()
                if on_result is not None:
                    maybe = on_result(result)
                    if asyncio.iscoroutine(maybe):
                        await maybe
                if stop.is_set() or (stop_at_chat and result.outcome == "chat"):
                    break

    workers = [asyncio.create_task(worker(clients[i % n_clients])) for i in range(max(1, settings.concurrency))]
    stopper = asyncio.create_task(stop.wait())
    try:
        pending: set[asyncio.Task[None]] = set(workers)
        while pending and not stop.is_set():
            done, _ = await asyncio.wait(pending | {stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopper}:
                pending.discard(task)
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
    finally:
        # Also reached on cancellation (Ctrl-C): abandon in-flight probes, close sockets.
        for task in [*workers, stopper]:
            task.cancel()
        await asyncio.gather(*workers, stopper, return_exceptions=True)
        for client in clients:
            await client.aclose()
    return results
