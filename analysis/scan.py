"""One scan, end to end: catalog -> targets -> probes -> findings, recorded in the store.

:func:`run_scan` starts a run; :func:`resume_scan` finishes an interrupted one.
Both report through a :class:`ScanObserver` (the CLI draws a progress bar, the
dashboard an ``st.progress``) and return a :class:`ScanOutcome`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from . import __version__
from .catalog import (
    HUB_URL,
    ROUTER_URL,
    Target,
    attach_router_list,
    build_targets,
    fetch_hub_models,
    fetch_router_models,
    normalise_hub_models,
    parse_provider_spec,
)
from .alternatives import suggest_alternatives
from .diagnose import diagnose
from .history import HISTORY_COLUMNS, PersistencePolicy, apply_persistence, summarise_history
from .errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUN_LEVEL,
    CatalogError,
    RcaError,
    RunLevelError,
    UsageError,
    auth_error,
    payment_error,
    retired_error,
    scrub,
)
from .probe import ProbeResult, ProbeSettings, probe_targets
from .store import Store
from .taxonomy import BLOCKING, RUN_LEVEL, TRANSIENT, reason_info

__all__ = ["ScanConfig", "ScanObserver", "ScanOutcome", "ScanInterrupted", "run_scan", "resume_scan",
           "validate_url"]


@dataclass
class ScanConfig:
    """Everything a scan needs.  Only ``token`` is secret; :meth:`public` leaves it out."""

    hub_url: str = HUB_URL
    router_url: str = ROUTER_URL
    provider: str = "hf-inference"
    source: str = "hub"
    concurrency: int = 8
    timeout: float = 30.0
    retries: int = 2
    max_tokens: int = 16
    backoff: float = 1.0
    retry_after_cap: float = 30.0
    hub_limit: int = 1000
    batch_size: int = 50
    persistent_after: int = 3
    persistent_min_hours: float = 12.0
    token: str | None = field(default=None, repr=False)

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("token")
        data["token_set"] = bool(self.token)
        return data

    def probe_settings(self) -> ProbeSettings:
        return ProbeSettings(router_url=self.router_url, token=self.token, concurrency=self.concurrency,
                             timeout=self.timeout, retries=self.retries, max_tokens=self.max_tokens,
                             backoff=self.backoff, retry_after_cap=self.retry_after_cap)

    def validate(self) -> None:
        validate_url(self.hub_url, "--hub-url")
        validate_url(self.router_url, "--router-url")
        parse_provider_spec(self.provider)
        for name, value, low in (("--concurrency", self.concurrency, 1), ("--retries", self.retries, 0),
                                 ("--max-tokens", self.max_tokens, 1), ("--batch-size", self.batch_size, 1)):
            if value < low:
                raise UsageError(f"{name} must be at least {low} (got {value})")
        if self.concurrency > 1024:
            raise UsageError(f"--concurrency must be at most 1024 (got {self.concurrency})")
        if not self.timeout > 0:
            raise UsageError(f"--timeout must be positive (got {self.timeout})")
        if self.backoff < 0 or self.retry_after_cap < 0:
            raise UsageError("--backoff and --retry-after-cap cannot be negative")


def validate_url(url: str, flag: str) -> str:
    """Reject anything that is not an absolute http(s) URL with a host (exit 2)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise UsageError(f"{flag}: {url!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{flag}: {url!r} is not an http(s) URL with a host, e.g. https://huggingface.co")
    if parts.username or parts.password:
        raise UsageError(f"{flag}: put credentials in HF_TOKEN, not in the URL")
    del port
    return url


class ScanObserver:
    """Receives progress events.  Every method is optional to override."""

    def run_started(self, run_id: int) -> None: ...

    def catalog_page(self, pages: int, models: int) -> None: ...

    def catalog_done(self, models: int, targets: int, router_listed: int | None) -> None: ...

    def warning(self, text: str) -> None: ...

    def probes_started(self, total: int, already_done: int) -> None: ...

    def probe_done(self, result: ProbeResult, counts: dict[str, int]) -> None: ...

    def probes_finished(self) -> None: ...


@dataclass
class ScanOutcome:
    run_id: int
    status: str  # ok | failed
    exit_code: int
    counts: dict[str, int]
    findings: pd.DataFrame
    failure_reason: str | None = None
    message: str = ""
    duration_s: float = 0.0


class ScanInterrupted(RcaError):
    """Ctrl-C during a scan: what was probed is stored; the run can be resumed."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, run_id: int, store_path: str, probed: int, total: int) -> None:
        super().__init__(f"interrupted: run {run_id} stored with {probed}/{total} targets probed; "
                         f"finish it with: python -m analysis scan --resume {run_id} --store {store_path}")
        self.run_id = run_id


def _outcome_counts(findings: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in findings["reason"].value_counts().sort_index().items()} if len(findings) else {}


def _load_catalog(config: ScanConfig, observer: ScanObserver) -> pd.DataFrame:
    entries = fetch_hub_models(
        config.hub_url, None if config.provider in ("", None) else config.provider, config.token,
        limit=config.hub_limit, timeout=config.timeout, retries=max(config.retries, 2), backoff=config.backoff,
        on_page=observer.catalog_page)
    catalog = normalise_hub_models(entries)
    try:
        router_data = fetch_router_models(config.router_url, config.token, timeout=config.timeout)
    except CatalogError as exc:
        observer.warning(f"router model list unavailable, 'in router list' left unknown: {exc}")
        router_data = None
    return attach_router_list(catalog, router_data)


def run_scan(config: ScanConfig, store: Store, observer: ScanObserver | None = None) -> ScanOutcome:
    """Scan the catalog of ``config.provider`` and store the run.

    Returns an outcome with exit code 0 (ok) or 3 (run-level failure: the run is
    stored as ``failed`` and blocks nothing).  Raises :class:`UsageError` /
    :class:`CatalogError` (exit 2) after recording the run as failed, and
    :class:`ScanInterrupted` on Ctrl-C after storing what was probed.
    """
    observer = observer or ScanObserver()
    config.validate()
    providers = parse_provider_spec(config.provider)
    run_id = store.create_run(source=config.source, provider=config.provider or "all", hub_url=config.hub_url,
                              router_url=config.router_url, settings=config.public(), tool_version=__version__)
    observer.run_started(run_id)
    try:
        catalog = _load_catalog(config, observer)
    except RunLevelError as exc:
        return _fail_run_level(store, run_id, exc, pd.DataFrame())
    except RcaError as exc:
        store.finish_run(run_id, "failed", failure_reason="catalog_error", failure_message=str(exc))
        raise
    targets = build_targets(catalog, providers)
    if not targets:
        message = (f"the catalog at {config.hub_url} lists no models for provider {config.provider!r}: "
                   "check the provider name (e.g. hf-inference, together, novita)")
        store.finish_run(run_id, "failed", failure_reason="empty_catalog", failure_message=message, n_targets=0)
        raise CatalogError(message)
    store.save_catalog(run_id, catalog)
    store.save_targets(run_id, targets)
    listed = int(catalog["in_router_list"].eq(True).sum()) if catalog["in_router_list"].notna().any() else None
    observer.catalog_done(len(catalog), len(targets), listed)
    return _probe_and_finish(config, store, run_id, catalog, targets, observer, already=0)


def resume_scan(store: Store, run_id: int | None, token: str | None,
                observer: ScanObserver | None = None) -> ScanOutcome:
    """Finish an interrupted run: probe only the targets without a stored result.

    ``run_id=None`` picks the newest ``running`` or ``interrupted`` run.
    """
    observer = observer or ScanObserver()
    if run_id is None:
        candidates = store.runs()
        candidates = candidates[candidates["status"].isin(["running", "interrupted"])]
        if candidates.empty:
            raise UsageError(f"no interrupted run to resume in {store.path}")
        run_id = int(candidates["id"].max())
    run = store.get_run(run_id)
    if run["status"] not in ("running", "interrupted"):
        raise UsageError(f"run {run_id} is {run['status']}, not interrupted: nothing to resume")
    known = {k: v for k, v in run["settings"].items() if k in ScanConfig.__dataclass_fields__ and k != "token"}
    config = ScanConfig(**known, token=token)
    catalog = store.catalog(run_id)
    all_targets = [Target(m, p, s) for m, p, s in store.targets(run_id).itertuples(index=False, name=None)]
    if not all_targets:
        raise UsageError(f"run {run_id} stopped before its catalog was stored: start a new scan instead")
    done = store.probed_keys(run_id)
    remaining = [t for t in all_targets if (t.model_id, t.provider) not in done]
    store.set_run_status(run_id, "running")
    observer.run_started(run_id)
    return _probe_and_finish(config, store, run_id, catalog, remaining, observer, already=len(done),
                             total=len(all_targets))


def _probe_and_finish(config: ScanConfig, store: Store, run_id: int, catalog: pd.DataFrame,
                      targets: list[Target], observer: ScanObserver, already: int,
                      total: int | None = None) -> ScanOutcome:
    total = total if total is not None else len(targets)
    buffer: list[ProbeResult] = []
    live_counts: dict[str, int] = {}
    probed = already
    last_flush = time.monotonic()
    settings = config.probe_settings()

    def flush() -> None:
        nonlocal last_flush
        if buffer:
            store.save_probes(run_id, buffer)
            buffer.clear()
        last_flush = time.monotonic()

    def on_result(result: ProbeResult) -> None:
        nonlocal probed
        buffer.append(result)
        probed += 1
        key = result.outcome if result.outcome != "http_error" else f"HTTP {result.http_status}"
        live_counts[key] = live_counts.get(key, 0) + 1
        # Commit in small batches: a crash loses at most one batch (or one second).
        if len(buffer) >= config.batch_size or time.monotonic() - last_flush > 1.0:
            flush()
        observer.probe_done(result, live_counts)

    observer.probes_started(total, already)
    try:
        asyncio.run(probe_targets(targets, settings, on_result))
    except KeyboardInterrupt:
        flush()
        store.set_run_status(run_id, "interrupted")
        observer.probes_finished()
        raise ScanInterrupted(run_id, str(store.path), probed, total) from None
    except BaseException:
        flush()
        store.set_run_status(run_id, "interrupted")
        raise
    flush()
    observer.probes_finished()

    probes = store.probes(run_id)
    run_level = probes[(probes["outcome"] == "http_error") & probes["http_status"].isin([401, 402, 410])]
    if len(run_level):
        first = run_level.iloc[0]
        status = int(first["http_status"])
        exc = _run_level_error(status, config, f"router {status} for {first['model_string']}: "
                                                f"{first['error_message'] or ''}")
        findings = diagnose(catalog, probes, run_ok=False)
        return _fail_run_level(store, run_id, exc, findings)

    findings = _with_history(store, run_id, diagnose(catalog, probes, run_ok=True), catalog,
                             PersistencePolicy(config.persistent_after, config.persistent_min_hours))
    store.save_findings(run_id, findings)
    counts = _outcome_counts(findings)
    store.finish_run(run_id, "ok", counts=counts, n_targets=total, n_probed=len(findings),
                     n_ok=counts.get("ok", 0), n_blocked=int(findings["blocked"].sum()),
                     n_transient=sum(v for k, v in counts.items() if k in TRANSIENT))
    run = store.get_run(run_id)
    return ScanOutcome(run_id, "ok", EXIT_OK, counts, findings, duration_s=run["duration_s"] or 0.0)


def _with_history(store: Store, run_id: int, findings: pd.DataFrame, catalog: pd.DataFrame,
                  policy: PersistencePolicy) -> pd.DataFrame:
    """Apply the persistent-failure policy, then add history columns and alternatives."""
    run = store.get_run(run_id)
    previous = store.scope_history(run["source"], run["provider"], before=run_id)
    findings = apply_persistence(findings, previous, run["started_at"], policy)
    current = findings[["model_id", "provider", "reason"]].assign(run_id=run_id, run_started_at=run["started_at"])
    summary = summarise_history(pd.concat([previous, current], ignore_index=True), policy.flap_window)
    findings = findings.drop(columns=[c for c in HISTORY_COLUMNS if c in findings.columns])
    findings = findings.merge(summary.drop(columns=["runs_seen"]), on=["model_id", "provider"], how="left")
    findings["alternatives"] = suggest_alternatives(findings, catalog)
    return findings


def _run_level_error(status: int, config: ScanConfig, evidence: str) -> RunLevelError:
    if status == 401:
        return auth_error("the router", bool(config.token), evidence)
    if status == 402:
        return payment_error("the router", evidence)
    return retired_error(config.router_url, "--router-url", evidence)


def _fail_run_level(store: Store, run_id: int, exc: RunLevelError, findings: pd.DataFrame) -> ScanOutcome:
    if len(findings):
        findings = findings.copy()
        findings["blocked"] = False
        store.save_findings(run_id, findings)
    message = scrub(str(exc))
    store.finish_run(run_id, "failed", failure_reason=exc.reason, failure_message=f"{message} [{exc.evidence}]",
                     counts=_outcome_counts(findings) if len(findings) else {}, n_probed=len(findings),
                     n_blocked=0)
    assert exc.reason in RUN_LEVEL and not reason_info(exc.reason).blocked and exc.reason not in BLOCKING
    run = store.get_run(run_id)
    return ScanOutcome(run_id, "failed", EXIT_RUN_LEVEL, _outcome_counts(findings) if len(findings) else {},
                       findings, exc.reason, message, run["duration_s"] or 0.0)
