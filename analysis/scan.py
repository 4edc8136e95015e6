"""One scan, end to end: catalog -> targets -> probes -> findings, recorded in the store.

:func:`run_scan` starts a run; :func:`resume_scan` finishes an incomplete one
(interrupted by Ctrl-C, or killed).
Both report through a :class:`ScanObserver` (the CLI draws a progress bar, the
dashboard an ``st.progress``) and return a :class:`ScanOutcome`.

A probing run has three phases, each stored as it goes:

1. canaries: up to three known-good models (``--canary`` or the most-downloaded
   live ones).  If every canary is refused with 404/410, the endpoint is wrong,
   not the models: ``endpoint_error``, exit 3, nothing blocked.
2. every other target.
3. route checks: a target refused on its own route (400/404/422) is tried on up
   to ``route_checks`` other routes; if one answers, it is ``route_mismatch``.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Coroutine
from urllib.parse import urlsplit

import pandas as pd

from . import __version__
from .alternatives import suggest_alternatives
from .catalog import (
    HUB_URL,
    ROUTER_URL,
    Target,
    attach_router_list,
    build_targets,
    fetch_hub_models,
    fetch_router_models,
    mapping_facts,
    normalise_hub_models,
    normalise_router_models,
    parse_provider_spec,
    read_catalog_file,
    route_alternatives,
)
from .diagnose import canary_verdict, diagnose, predict, user_message
from .errors import (
    EXIT_FAIL_ON,
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
from .history import HISTORY_COLUMNS, PersistencePolicy, apply_persistence, summarise_history
from .probe import ProbeResult, ProbeSettings, RouteCheck, check_routes, probe_targets
from .store import Store
from .taxonomy import CHAT_PIPELINE_TAGS, TRANSIENT, reason_info

__all__ = ["SOURCES", "ScanConfig", "ScanObserver", "ScanOutcome", "ScanInterrupted", "run_scan", "resume_scan",
           "validate_url"]

SOURCES = ("hub", "router", "openai", "file")
REFUSALS = (400, 404, 422)


@dataclass
class ScanConfig:
    """Everything a scan needs.  Only ``token`` is secret; :meth:`public` leaves it out."""

    hub_url: str = HUB_URL
    router_url: str = ROUTER_URL
    provider: str = "hf-inference"
    source: str = "hub"
    catalog_file: str | None = None
    # "suffix": id:provider; "bare": the bare id (the router or gateway chooses the provider);
    # "auto": suffix for the Hub and router catalogs, bare for a file or another gateway's list.
    route: str = "auto"
    concurrency: int = 8
    timeout: float = 30.0
    retries: int = 2
    max_tokens: int = 16
    backoff: float = 1.0
    retry_after_cap: float = 30.0
    hub_limit: int = 1000
    batch_size: int = 50
    route_checks: int = 2
    canaries: list[str] = field(default_factory=list)
    canary_count: int = 3
    probe: bool = True
    persistent_after: int = 3
    persistent_min_hours: float = 12.0
    fail_on: str | None = None  # "new-blocked"
    token: str | None = field(default=None, repr=False)

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("token")
        data["token_set"] = bool(self.token)
        return data

    @property
    def uses_suffix(self) -> bool:
        """Whether model strings carry ``:provider``."""
        if self.source == "openai":
            return False
        if self.route == "auto":
            return self.source in ("hub", "router")
        return self.route == "suffix"

    @property
    def scope_provider(self) -> str:
        """The provider recorded on the run (history compares runs of the same source and provider)."""
        if self.source == "openai":
            return "-"
        return self.provider or "all"

    def probe_settings(self) -> ProbeSettings:
        return ProbeSettings(router_url=self.router_url, token=self.token, concurrency=self.concurrency,
                             timeout=self.timeout, retries=self.retries, max_tokens=self.max_tokens,
                             backoff=self.backoff, retry_after_cap=self.retry_after_cap)

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise UsageError(f"--source must be one of {', '.join(SOURCES)} (got {self.source!r})")
        if self.source == "hub":
            validate_url(self.hub_url, "--hub-url")
        validate_url(self.router_url, "--router-url")
        if self.source == "file" and not self.catalog_file:
            raise UsageError("--source file needs --catalog-file PATH (a JSON or CSV list of model ids)")
        if self.route not in ("auto", "suffix", "bare"):
            raise UsageError(f"--route must be 'auto', 'suffix' or 'bare' (got {self.route!r})")
        if self.hub_limit < 1:
            raise UsageError(f"--hub-limit must be at least 1 (got {self.hub_limit})")
        if self.fail_on not in (None, "new-blocked"):
            raise UsageError(f"--fail-on supports 'new-blocked' (got {self.fail_on!r})")
        parse_provider_spec(self.provider)
        for name, value, low in (("--concurrency", self.concurrency, 1), ("--retries", self.retries, 0),
                                 ("--max-tokens", self.max_tokens, 1), ("--batch-size", self.batch_size, 1),
                                 ("--route-checks", self.route_checks, 0), ("--persistent-after", self.persistent_after,
                                                                            1)):
            if value < low:
                raise UsageError(f"{name} must be at least {low} (got {value})")
        if self.concurrency > 1024:
            raise UsageError(f"--concurrency must be at most 1024 (got {self.concurrency})")
        if not self.timeout > 0:
            raise UsageError(f"--timeout must be positive (got {self.timeout})")
        if self.backoff < 0 or self.retry_after_cap < 0 or self.persistent_min_hours < 0:
            raise UsageError("--backoff, --retry-after-cap and --persistent-min-hours cannot be negative")


def validate_url(url: str, flag: str) -> str:
    """Reject anything that is not an absolute http(s) URL with a host (exit 2)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise UsageError(f"{flag}: {url!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{flag}: {url!r} is not an http(s) URL with a host, e.g. https://huggingface.co")
    if parts.username or parts.password:
        raise UsageError(f"{flag}: put credentials in HF_TOKEN, not in the URL")
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

    def route_checks_started(self, targets: int) -> None: ...


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
    newly_blocked: pd.DataFrame | None = None
    previous_run_id: int | None = None


class ScanInterrupted(RcaError):
    """Ctrl-C during a scan: what was probed is stored; the run can be resumed."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, run_id: int, store_path: str, probed: int, total: int) -> None:
        super().__init__(f"interrupted: run {run_id} stored with {probed}/{total} targets probed; "
                         f"finish it with: python -m analysis scan --resume {run_id} --store {shlex.quote(store_path)}")
        self.run_id = run_id


def _outcome_counts(findings: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in findings["reason"].value_counts().sort_index().items()} if len(findings) else {}


# --------------------------------------------------------------------------- catalog


def _load_catalog(config: ScanConfig, observer: ScanObserver) -> pd.DataFrame:
    if config.source == "file":
        catalog = read_catalog_file(str(config.catalog_file))
        return attach_router_list(catalog, _router_list(config, observer))
    if config.source in ("router", "openai"):
        data = fetch_router_models(config.router_url, config.token, timeout=config.timeout)
        catalog = normalise_router_models(data, config.token)
        if config.source == "router":
            providers = parse_provider_spec(config.provider)
            if providers is not None:
                keep = [any(p in m for p in providers) for m in catalog["mapping"]]
                catalog = catalog[keep].reset_index(drop=True)
        return catalog
    entries = fetch_hub_models(
        config.hub_url, config.provider or "all", config.token, limit=config.hub_limit, timeout=config.timeout,
        retries=max(config.retries, 2), backoff=config.backoff, on_page=observer.catalog_page)
    return attach_router_list(normalise_hub_models(entries, config.token), _router_list(config, observer))


def _router_list(config: ScanConfig, observer: ScanObserver) -> dict[str, Any] | None:
    try:
        return fetch_router_models(config.router_url, config.token, timeout=config.timeout)
    except CatalogError as exc:
        observer.warning(f"router model list unavailable, 'in router list' left unknown: {exc}")
        return None


def _targets(config: ScanConfig, catalog: pd.DataFrame) -> list[Target]:
    if config.source == "openai":
        return build_targets(catalog, None, route_suffix=False)
    return build_targets(catalog, parse_provider_spec(config.provider), route_suffix=config.uses_suffix)


def _choose_canaries(config: ScanConfig, catalog: pd.DataFrame, targets: list[Target]) -> list[Target]:
    """Explicit ``--canary`` ids, else up to ``canary_count`` known-good models.

    Known-good: not gated, not a non-chat tag, not missing from the router list, and
    mapped ``live`` for the probed provider, most downloads first.  A catalog
    without mappings (a file, a plain OpenAI list) falls back to the models the
    router lists, then any.
    """
    by_model: dict[str, Target] = {}
    for target in targets:
        by_model.setdefault(target.model_id, target)
    if config.canaries:
        chosen = []
        provider = targets[0].provider if targets else ""
        for model_id in config.canaries:
            if model_id in by_model:
                chosen.append(by_model[model_id])
            else:
                suffix = config.uses_suffix and provider
                chosen.append(Target(model_id, provider, f"{model_id}:{provider}" if suffix else model_id))
        return chosen
    # Plain dicts, not rows.loc[...] per target: .loc costs ~50 us a call, 0.3 s on 6,000 targets.
    facts = {}
    for model_id, mapping, tag, listed, downloads, gated in zip(
            catalog["model_id"], catalog["mapping"], catalog["pipeline_tag"], catalog["in_router_list"],
            catalog["downloads"], catalog["gated"]):
        facts.setdefault(model_id, (mapping, tag, listed, downloads, gated))
    candidates = []
    fallback = []  # no mapping facts (a file or a plain OpenAI list): listed by the router, or any
    for target in targets:
        if target.model_id not in facts:
            continue
        mapping, tag, listed, downloads, gated = facts[target.model_id]
        tag = tag if isinstance(tag, str) else None
        if gated not in (None, "false") or (tag is not None and tag not in CHAT_PIPELINE_TAGS) or listed is False:
            continue  # a gated or non-chat model is no known-good canary
        status, task = mapping_facts(mapping, target.provider)
        downloads = downloads if pd.notna(downloads) else -1
        if status == "live" and task in (None, "conversational"):
            candidates.append((-downloads, target.model_string, target))
        elif status is None:
            fallback.append(((0 if listed else 1, -downloads), target.model_string, target))
    candidates.sort(key=lambda c: (c[0], c[1]))
    fallback.sort(key=lambda c: (c[0], c[1]))
    if not candidates:
        candidates = fallback
    seen: set[str] = set()
    chosen = []
    for _, _, target in candidates:
        if target.model_id not in seen:
            seen.add(target.model_id)
            chosen.append(target)
        if len(chosen) >= config.canary_count:
            break
    return chosen


# --------------------------------------------------------------------------- entry points


def run_scan(config: ScanConfig, store: Store, observer: ScanObserver | None = None) -> ScanOutcome:
    """Scan a catalog and store the run.

    Returns an outcome with exit code 0 (ok), 1 (``fail_on`` holds) or 3
    (run-level failure: the run is stored as ``failed`` and blocks nothing).
    Raises :class:`UsageError` / :class:`CatalogError` (exit 2) after recording
    the run as failed, and :class:`ScanInterrupted` on Ctrl-C after storing
    what was probed.
    """
    observer = observer or ScanObserver()
    config.validate()
    run_id = store.create_run(source=config.source, provider=config.scope_provider,
                              hub_url=config.hub_url if config.source == "hub" else None,
                              router_url=config.router_url, settings=config.public(), tool_version=__version__,
                              mode="probe" if config.probe else "predict")
    observer.run_started(run_id)
    try:
        catalog = _load_catalog(config, observer)
    except RunLevelError as exc:
        return _fail_run_level(store, run_id, exc, pd.DataFrame())
    except RcaError as exc:
        store.finish_run(run_id, "failed", failure_reason="catalog_error", failure_message=str(exc))
        raise
    except KeyboardInterrupt:
        # Nothing to resume yet: without a stored catalog the run cannot go on.
        store.finish_run(run_id, "failed", failure_reason="interrupted", failure_message="interrupted while "
                         "reading the catalog; start a new scan")
        raise
    except BaseException as exc:
        store.finish_run(run_id, "failed", failure_reason="internal_error",
                         failure_message=scrub(f"{type(exc).__name__}: {exc}", config.token))
        raise
    skipped = int(catalog.attrs.get("skipped_ids", 0))
    if skipped:
        observer.warning(f"skipped {skipped} catalog id(s) holding control characters, invalid text or the token: "
                         "they are neither probed nor stored")
    targets = _targets(config, catalog)
    if not targets:
        where = config.catalog_file if config.source == "file" else (
            config.hub_url if config.source == "hub" else config.router_url)
        message = (f"the catalog at {where} lists no models for provider {config.provider!r}: "
                   "check the provider name (e.g. hf-inference, together, novita)")
        store.finish_run(run_id, "failed", failure_reason="empty_catalog", failure_message=message, n_targets=0)
        raise CatalogError(message)
    store.save_catalog(run_id, catalog)
    store.save_targets(run_id, targets)
    listed = int(catalog["in_router_list"].eq(True).sum()) if catalog["in_router_list"].notna().any() else None
    observer.catalog_done(len(catalog), len(targets), listed)
    if not config.probe:
        return _finish_predicted(config, store, run_id, catalog, targets)
    canaries = _choose_canaries(config, catalog, targets)
    store.set_canaries(run_id, [c.model_string for c in canaries])
    return _probe_and_finish(config, store, run_id, catalog, targets, canaries, observer)


def resume_scan(store: Store, run_id: int | None, token: str | None,
                observer: ScanObserver | None = None) -> ScanOutcome:
    """Finish an interrupted (or killed) run: probe only the targets without a stored result.

    ``run_id=None`` picks the newest ``incomplete`` run.  A run still marked
    ``running`` whose process is gone (killed) was marked incomplete when the
    store was opened.
    """
    observer = observer or ScanObserver()
    if run_id is None:
        candidates = store.runs()
        candidates = candidates[candidates["status"] == "incomplete"]
        if candidates.empty:
            raise UsageError(f"no incomplete run to resume in {store.path}")
        run_id = int(candidates["id"].max())
    run = store.get_run(run_id)
    if run["status"] == "running":
        raise UsageError(f"run {run_id} is still running (process {run.get('pid')}); resume it once it has stopped")
    if run["status"] != "incomplete":
        raise UsageError(f"run {run_id} is {run['status']}, not incomplete: nothing to resume")
    known = {k: v for k, v in run["settings"].items() if k in ScanConfig.__dataclass_fields__ and k != "token"}
    config = ScanConfig(**known, token=token)
    catalog = store.catalog(run_id)
    targets = [Target(m, p, s) for m, p, s in store.targets(run_id).itertuples(index=False, name=None)]
    if not targets:
        raise UsageError(f"run {run_id} stopped before its catalog was stored: start a new scan instead")
    if not config.probe:
        store.set_run_status(run_id, "running")
        return _finish_predicted(config, store, run_id, catalog, targets)
    by_string = {t.model_string: t for t in targets}
    canaries = [by_string.get(s) or _extra_canary(s) for s in run["canaries"]]
    store.set_run_status(run_id, "running")
    observer.run_started(run_id)
    return _probe_and_finish(config, store, run_id, catalog, targets, canaries, observer)


def _extra_canary(model_string: str) -> Target:
    model_id, _, provider = model_string.partition(":")
    return Target(model_id, provider, model_string)


# --------------------------------------------------------------------------- probing


class _Recorder:
    """Commits probe results in small batches as they arrive: a crash loses at most one batch."""

    def __init__(self, store: Store, run_id: int, batch_size: int, observer: ScanObserver) -> None:
        self.store = store
        self.run_id = run_id
        self.batch_size = batch_size
        self.observer = observer
        self.buffer: list[ProbeResult] = []
        self.counts: dict[str, int] = {}
        self.probed = 0
        self.last_flush = time.monotonic()

    def flush(self) -> None:
        if self.buffer:
            self.store.save_probes(self.run_id, self.buffer)
            self.buffer.clear()
        self.last_flush = time.monotonic()

    def __call__(self, result: ProbeResult) -> None:
        self.buffer.append(result)
        if result.kind != "route":
            self.probed += 1
        key = result.outcome if result.outcome != "http_error" else f"HTTP {result.http_status}"
        self.counts[key] = self.counts.get(key, 0) + 1
        if len(self.buffer) >= self.batch_size or time.monotonic() - self.last_flush > 1.0:
            self.flush()
        self.observer.probe_done(result, self.counts)


def _run_phase(coro_factory: Callable[[], Coroutine[Any, Any, list[ProbeResult]]], recorder: _Recorder,
               store: Store, run_id: int, total: int) -> None:
    try:
        asyncio.run(coro_factory())
    except KeyboardInterrupt:
        recorder.flush()
        store.set_run_status(run_id, "incomplete")
        recorder.observer.probes_finished()
        raise ScanInterrupted(run_id, str(store.path), recorder.probed, total) from None
    except BaseException:
        recorder.flush()
        store.set_run_status(run_id, "incomplete")
        raise
    recorder.flush()


def _run_level_probe(probes: pd.DataFrame) -> dict[str, Any] | None:
    hits = probes[(probes["outcome"] == "http_error") & probes["http_status"].isin([401, 402, 410])]
    return None if hits.empty else hits.iloc[0].to_dict()


def _probe_and_finish(config: ScanConfig, store: Store, run_id: int, catalog: pd.DataFrame,
                      targets: list[Target], canaries: list[Target], observer: ScanObserver) -> ScanOutcome:
    settings = config.probe_settings()
    done = store.probed_keys(run_id)
    target_keys = {(t.model_id, t.provider) for t in targets}
    recorder = _Recorder(store, run_id, config.batch_size, observer)
    recorder.probed = len(done & target_keys)
    total = len(targets)
    observer.probes_started(total, recorder.probed)

    # Phase 1: canaries.  They are targets too (unless given explicitly from outside the catalog),
    # so they are not probed again in phase 2.
    todo_canaries = [c for c in canaries if (c.model_id, c.provider) not in done]
    if todo_canaries:
        inside = [c for c in todo_canaries if (c.model_id, c.provider) in target_keys]
        outside = [c for c in todo_canaries if (c.model_id, c.provider) not in target_keys]

        async def canary_phase() -> list[ProbeResult]:
            # Each probe_targets call opens its own connections: skip the empty ones.
            results = await probe_targets(inside, settings, recorder) if inside else []
            return results + (await probe_targets(outside, settings, recorder, kind="canary") if outside else [])

        _run_phase(canary_phase, recorder, store, run_id, total)
    probes = store.probes(run_id)
    hit = _run_level_probe(probes)
    if canaries and hit is None:
        canary_strings = {c.model_string for c in canaries}
        canary_results = _as_results(probes[probes["model_string"].isin(canary_strings) & (probes["kind"] != "route")])
        verdict = canary_verdict(canary_results) if len(canary_results) == len(canary_strings) else None
        if verdict is not None:
            observer.probes_finished()
            reason, how = verdict
            names = ", ".join(sorted(canary_strings))
            where = "the token" if reason == "auth_error" else f"the endpoint {config.router_url}"
            check = "Check HF_TOKEN's permissions" if reason == "auth_error" else "Check --router-url"
            exc = RunLevelError(reason, f"every canary ({names}) was {how}: {where} looks wrong, not the models. "
                                f"{check}. Nothing was blocked.", "canaries: " + "; ".join(
                                    f"{r.model_string} {r.http_status or r.outcome} {r.error_code or ''}".strip()
                                    for r in canary_results))
            return _fail_run_level(store, run_id, exc, diagnose(catalog, probes, run_ok=False))

    # Phase 2: every other target.
    if hit is None:
        done = store.probed_keys(run_id)
        remaining = [t for t in targets if (t.model_id, t.provider) not in done]
        _run_phase(lambda: probe_targets(remaining, settings, recorder), recorder, store, run_id, total)
        probes = store.probes(run_id)
        hit = _run_level_probe(probes)

    # Phase 3: route checks for refused targets.
    if hit is None and config.route_checks > 0:
        checks = _route_checks(config, catalog, probes)
        if checks:
            observer.route_checks_started(len(checks))
            _run_phase(lambda: check_routes(checks, settings, recorder), recorder, store, run_id, total)
            probes = store.probes(run_id)
            hit = _run_level_probe(probes)
    observer.probes_finished()

    if hit is not None:
        status = int(hit["http_status"])
        exc = _run_level_error(status, config, f"router {status} for {hit['model_string']}: "
                                               f"{hit['error_message'] or ''}")
        return _fail_run_level(store, run_id, exc, diagnose(catalog, probes, run_ok=False))

    findings = _with_history(store, run_id, diagnose(catalog, probes, run_ok=True), catalog,
                             PersistencePolicy(config.persistent_after, config.persistent_min_hours))
    return _finish_ok(config, store, run_id, findings, total)


def _as_results(probes: pd.DataFrame) -> list[ProbeResult]:
    return [ProbeResult(r["model_id"], r["provider"], r["model_string"], r["url"], r["kind"],
                        None if pd.isna(r["http_status"]) else int(r["http_status"]), r["outcome"], r["error_code"],
                        r["error_message"], r["latency_ms"], int(r["attempts"]), [], r["started_at"], r["finished_at"])
            for r in probes.to_dict("records")]


def _route_checks(config: ScanConfig, catalog: pd.DataFrame, probes: pd.DataFrame) -> list[RouteCheck]:
    """Route checks still to do: refused primaries without a working or exhausted check."""
    mappings = dict(zip(catalog["model_id"], catalog["mapping"]))
    primary = probes[(probes["kind"] == "primary") & (probes["outcome"] == "http_error")
                     & probes["http_status"].isin(REFUSALS)]
    routes = probes[probes["kind"] == "route"]
    tried: dict[tuple[str, str], set[str]] = {}
    working: set[tuple[str, str]] = set()
    for model_id, route_for, model_string, outcome in zip(routes["model_id"], routes["route_for"],
                                                          routes["model_string"], routes["outcome"]):
        tried.setdefault((model_id, route_for), set()).add(model_string)
        if outcome == "chat":
            working.add((model_id, route_for))
    checks = []
    for model_id, provider, model_string in zip(primary["model_id"], primary["provider"], primary["model_string"]):
        key = (model_id, provider)
        if key in working:
            continue
        target = Target(model_id, provider, model_string)
        alternatives = route_alternatives(target, mappings.get(model_id), config.route_checks)
        alternatives = [a for a in alternatives if a.model_string not in tried.get(key, set())]
        if alternatives:
            checks.append(RouteCheck(target, tuple(alternatives)))
    return checks


# --------------------------------------------------------------------------- finishing


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


def _finish_predicted(config: ScanConfig, store: Store, run_id: int, catalog: pd.DataFrame,
                      targets: list[Target]) -> ScanOutcome:
    run = store.get_run(run_id)
    findings = predict(catalog, targets, run["started_at"])
    findings["alternatives"] = [[] for _ in range(len(findings))]
    return _finish_ok(config, store, run_id, findings, len(targets))


def _finish_ok(config: ScanConfig, store: Store, run_id: int, findings: pd.DataFrame, total: int) -> ScanOutcome:
    store.save_findings(run_id, findings)
    counts = _outcome_counts(findings)
    store.finish_run(run_id, "ok", counts=counts, n_targets=total, n_probed=len(findings),
                     n_ok=counts.get("ok", 0), n_blocked=int(findings["blocked"].sum()),
                     n_transient=sum(v for k, v in counts.items() if k in TRANSIENT))
    run = store.get_run(run_id)
    outcome = ScanOutcome(run_id, "ok", EXIT_OK, counts, findings, duration_s=run["duration_s"] or 0.0)
    if config.fail_on == "new-blocked" and config.probe:
        from .views import run_diff

        previous = store.latest_run_id("ok", source=run["source"], provider=run["provider"], before=run_id,
                                       mode="probe")
        if previous is None:
            newly = findings[findings["blocked"]][["model_id", "provider", "reason"]]
        else:
            diff = run_diff(store, previous, run_id)
            newly = diff[diff["change"] == "newly_blocked"][["model_id", "provider", "to_reason"]].rename(
                columns={"to_reason": "reason"})
        outcome.newly_blocked = newly.reset_index(drop=True)
        outcome.previous_run_id = previous
        if len(newly):
            outcome.exit_code = EXIT_FAIL_ON
    return outcome


def _run_level_error(status: int, config: ScanConfig, evidence: str) -> RunLevelError:
    if status == 401:
        return auth_error("the router", bool(config.token), evidence)
    if status == 402:
        return payment_error("the router", evidence)
    return retired_error(config.router_url, "--router-url", evidence)


def _fail_run_level(store: Store, run_id: int, exc: RunLevelError, findings: pd.DataFrame) -> ScanOutcome:
    if len(findings):
        # Nothing from a failed run is ever blocked, and no model in it is judged: a refusal
        # there is evidence about the setup.  The per-model answer stays in `detail`.
        findings = findings.copy()
        findings["blocked"] = False
        judged = findings["reason"] == "ok"
        info = reason_info(exc.reason)
        findings.loc[~judged, "reason"] = exc.reason
        findings.loc[~judged, "action"] = info.action
        findings.loc[~judged, "message"] = [user_message(exc.reason, m) for m in findings.loc[~judged, "model_id"]]
        findings["note"] = [f"run failed ({exc.reason}): not judged" + (f"; {n}" if n else "") if not ok else n
                            for ok, n in zip(judged, findings["note"].fillna(""))]
        store.save_findings(run_id, findings)
    message = scrub(str(exc))
    counts = _outcome_counts(findings) if len(findings) else {}
    store.finish_run(run_id, "failed", failure_reason=exc.reason, failure_message=f"{message} [{exc.evidence}]",
                     counts=counts, n_probed=len(findings), n_blocked=0)
    run = store.get_run(run_id)
    return ScanOutcome(run_id, "failed", EXIT_RUN_LEVEL, counts, findings, exc.reason, message,
                       run["duration_s"] or 0.0)
