"""One scan, end to end: catalog -> targets -> probes -> findings, recorded in the store.

:func:`run_scan` starts a run; :func:`resume_scan` finishes an incomplete one
(interrupted by Ctrl-C, or killed).
Both report through a :class:`ScanObserver` (the CLI draws a progress bar, the
dashboard an ``st.progress``) and return a :class:`ScanOutcome`.

A probing run experiments before it judges; each phase is stored as it goes:

1. canaries, per provider: up to three known-good models (``--canary`` or the
   most-downloaded live, router-listed ones); a transient canary is re-probed
   once.  A provider whose canaries all fail alike (:mod:`analysis.pipeline.canaries`)
   is not judged: a run-level reason, nothing blocked.
2. every other target of the providers whose canaries passed.
3. the majority rule: one refusal on most of a provider's answers re-probes its
   canaries; if they now fail the same way, the provider is faulted.
4. request experiments: a refusal about our request is re-probed once with the
   request changed (:mod:`analysis.pipeline.experiments`); if it answers, ``probe_error``.
5. route checks: a target still refused on its own route is tried on up to
   ``route_checks`` other routes; if one answers, ``route_mismatch``.

The run is ``ok``; ``partial`` when some providers of several were faulted
(their blocklist rows are carried forward from their last successful run);
``failed`` when all were.  Partial and failed runs exit 3.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import queue
import shlex
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Coroutine, Iterator

import pandas as pd

from analysis import __version__
from analysis.config import SOURCES, ScanConfig, validate_url
from analysis.errors import (
    EXIT_FAIL_ON,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUN_LEVEL,
    CatalogError,
    RcaError,
    RunBusyError,
    RunLevelError,
    StoreError,
    UsageError,
    scrub,
)
from analysis.pipeline.alternatives import suggest_alternatives
from analysis.pipeline.budget import Budget, Pricing, Spend
from analysis.pipeline.canaries import (
    ProviderFault,
    choose_canaries,
    describe_faults,
    is_transient_answer,
    judge_canaries,
    majority_fault,
)
from analysis.pipeline.catalog import (
    HubNormaliser,
    attach_router_list,
    fetch_hub_models,
    fetch_router_models,
    normalise_router_models,
    read_catalog_file,
    router_pricing,
)
from analysis.pipeline.diagnose import REFUSAL_STATUSES, answer_kind, diagnose, predict, user_message
from analysis.pipeline.experiments import plan_change
from analysis.pipeline.history import (
    HISTORY_COLUMNS,
    PersistencePolicy,
    apply_persistence,
    expected_seconds,
    newly_blocked,
    summarise_history,
)
from analysis.pipeline.incremental import DEFAULT_MAX_AGE_S, select_changed
from analysis.pipeline.observer import ScanObserver
from analysis.pipeline.plan import ScanPlan, build_plan
from analysis.pipeline.probe import (
    Experiment,
    ProbeResult,
    RouteCheck,
    check_routes,
    probe_targets,
    run_experiments,
)
from analysis.pipeline.targets import (
    Target,
    build_targets,
    excluded_providers,
    hub_provider_param,
    mapping_facts,
    parse_provider_spec,
    route_alternatives,
)
from analysis.schema import Run, is_missing
from analysis.store import SUCCESSFUL, Store
from analysis.taxonomy import CHAT_PIPELINE_TAGS, RUN_LEVEL, TAXONOMY_VERSION, TRANSIENT, reason_info

__all__ = ["SOURCES", "ScanConfig", "ScanObserver", "ScanOutcome", "ScanInterrupted", "run_scan", "resume_scan",
           "plan_scan", "validate_url"]

# Probe kinds that stand for a target's own answer; the others are evidence around it.
OWN_ANSWER_KINDS = ("primary", "canary")


@dataclass
class ScanOutcome:
    run_id: int
    status: str  # ok | partial | failed
    exit_code: int
    counts: dict[str, int]
    findings: pd.DataFrame
    failure_reason: str | None = None
    message: str = ""
    duration_s: float = 0.0
    newly_blocked: pd.DataFrame | None = None
    previous_run_id: int | None = None
    taxonomy_changed: bool = False  # the previous run was judged by another taxonomy version: --fail-on held back
    spend: Spend | None = None  # what this invocation's answers cost (tokens reported, estimated USD)


class ScanInterrupted(RcaError):
    """Ctrl-C during a scan: what was probed is stored; the run can be resumed."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, run_id: int, store_path: str, probed: int, total: int) -> None:
        super().__init__(f"interrupted: run {run_id} stored with {probed}/{total} targets probed; "
                         f"finish it with: python -m analysis scan --resume {run_id} --store {shlex.quote(store_path)}")
        self.run_id = run_id


class BudgetExhausted(RcaError):
    """The next requests could pass ``--budget-usd``: the run stops before sending them and can be resumed."""

    exit_code = EXIT_RUN_LEVEL

    def __init__(self, run_id: int, store_path: str, budget: Budget, probed: int, total: int) -> None:
        unpriced = (f"; {len(budget.unpriced)} unpriced targets counted as free" if budget.unpriced else "")
        super().__init__(
            f"budget: the next requests could pass --budget-usd {budget.limit_usd:g} (estimated spend "
            f"${budget.spent_usd:.6f}{unpriced}); run {run_id} stopped with {probed}/{total} targets probed and "
            f"stays incomplete; finish it with: python -m analysis scan --resume {run_id} "
            f"--store {shlex.quote(store_path)} --budget-usd AMOUNT")
        self.run_id = run_id


def _outcome_counts(findings: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in findings["reason"].value_counts().sort_index().items()} if len(findings) else {}


# --------------------------------------------------------------------------- catalog


def _load_catalog(config: ScanConfig, observer: ScanObserver) -> tuple[pd.DataFrame, Pricing]:
    """The catalog frame, and the router's prices (kept out of the frame's ``attrs``, which pandas deep-copies on
    every operation: 6,000 prices there cost a scan seconds)."""
    if config.source == "file":
        catalog = read_catalog_file(str(config.catalog_file))
        router = _router_list(config, observer)
        return attach_router_list(catalog, router), router_pricing(router)
    if config.source in ("router", "openai"):
        data = fetch_router_models(config.router_url, config.token, timeout=config.timeout)
        catalog = normalise_router_models(data, config.token, repo_ids=config.source == "router")
        if config.source == "router":
            providers = parse_provider_spec(config.provider)
            if providers is not None:
                keep = [any(p in m for p in providers) for m in catalog["mapping"]]
                catalog = catalog[keep].reset_index(drop=True)
        return catalog, router_pricing(data)
    # The router's list is fetched while the Hub pages come in, and each Hub page is normalised here while the
    # next one comes in: the reads wait on the network, the normalising on the CPU.  Daemon threads, so that
    # Ctrl-C during the Hub pages never waits for an answer.
    fetched: dict[str, Any] = {}

    def fetch_router() -> None:
        try:
            fetched["list"] = _router_list(config, observer)
        except BaseException as exc:  # noqa: BLE001 - handed to the scan's thread, which raises it
            fetched["error"] = exc

    pages: queue.SimpleQueue[list[dict[str, Any]] | BaseException | None] = queue.SimpleQueue()

    def fetch_hub() -> None:
        try:
            fetch_hub_models(config.hub_url, hub_provider_param(config.provider), config.token,
                             limit=config.hub_limit, timeout=config.timeout, retries=max(config.retries, 2),
                             backoff=config.backoff, on_page=observer.catalog_page, on_entries=pages.put)
            pages.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the scan's thread, which raises it
            pages.put(exc)

    router_thread = threading.Thread(target=fetch_router, name="router-list", daemon=True)
    router_thread.start()
    threading.Thread(target=fetch_hub, name="hub-pages", daemon=True).start()
    normaliser = HubNormaliser(config.token)
    while (page := pages.get()) is not None:
        if isinstance(page, BaseException):
            raise page
        normaliser.add(page)
    router_thread.join()
    if "error" in fetched:  # the router refused the token, say: a run-level answer, as if read after the Hub
        raise fetched["error"]
    router = fetched.get("list")
    return attach_router_list(normaliser.frame(), router), router_pricing(router)


def _router_list(config: ScanConfig, observer: ScanObserver) -> dict[str, Any] | None:
    try:
        return fetch_router_models(config.router_url, config.token, timeout=config.timeout)
    except CatalogError as exc:
        observer.warning(f"router model list unavailable, 'in router list' left unknown: {exc}")
        return None


def _targets(config: ScanConfig, catalog: pd.DataFrame) -> list[Target]:
    if config.source == "openai":
        return build_targets(catalog, None, route_suffix=False)
    return build_targets(catalog, parse_provider_spec(config.provider), route_suffix=config.uses_suffix,
                         exclude=excluded_providers(config.provider))


# --------------------------------------------------------------------------- entry points


@contextmanager
def _few_collections() -> Iterator[None]:
    """Fewer garbage collections while a scan runs; the previous thresholds come back after.

    A scan allocates millions of short-lived objects and makes few reference cycles.  At Python's default
    thresholds (700, 10, 10) a 6,000-model scan ran about 470 collections, four of them full ones over every
    long-lived object: 0.5 s of a 6.6 s scan (``benchmarks/bench_probe.py``); at these, about 0.2 s.
    """
    previous = gc.get_threshold()
    gc.set_threshold(20_000, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*previous)


@_few_collections()
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
                              mode="probe" if config.probe else "predict", taxonomy_version=TAXONOMY_VERSION)
    observer.run_started(run_id)
    try:
        catalog, pricing = _load_catalog(config, observer)
    except RunLevelError as exc:
        return _fail_run_level(store, run_id, exc.reason, str(exc), exc.evidence, pd.DataFrame())
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
    try:
        store.save_catalog(run_id, catalog)
        store.save_targets(run_id, targets)
    except StoreError as exc:
        try:  # without its catalog the run cannot be resumed: say so, if the store still takes a write
            store.finish_run(run_id, "failed", failure_reason="store_error", failure_message=f"{exc}; start a "
                             "new scan")
        except StoreError:
            pass
        raise
    listed = int(catalog["in_router_list"].eq(True).sum()) if catalog["in_router_list"].notna().any() else None
    observer.catalog_done(len(catalog), len(targets), listed)
    if not config.probe:
        return _finish_predicted(config, store, run_id, catalog, targets)
    canaries = choose_canaries(catalog, targets, config.canaries, config.canary_count, config.uses_suffix)
    chosen = {p: [c.model_string for c in group] for p, group in canaries.items()}
    store.set_canaries(run_id, chosen)
    observer.canaries_chosen(chosen)
    return _probe_and_finish(config, store, run_id, catalog, targets, canaries, observer,
                             _budget(config, config.budget_usd, pricing), pricing)


def _budget(config: ScanConfig, limit_usd: float | None, pricing: Any) -> Budget | None:
    return None if limit_usd is None else Budget(limit_usd, pricing or {}, config.max_tokens,
                                                   config.max_tokens_retry)


def _expected_seconds(store: Store, run_id: int) -> dict[str, float]:
    """How long each route held a worker in the scope's previous successful run: the big phase starts the slowest
    first, so that a model that never answers does not begin its chain of timeouts at the end of the run."""
    previous = store.previous_ok_run(run_id)
    return expected_seconds(store.probe_times(previous)) if previous is not None else {}


def _select(config: ScanConfig, store: Store, run_id: int, catalog: pd.DataFrame, targets: list[Target],
            canaries: dict[str, list[Target]], observer: ScanObserver) -> tuple[list[Target], pd.DataFrame]:
    """The targets to probe in this run, and (``--changed-only``) the previous verdicts carried instead."""
    if not config.changed_only:
        return targets, pd.DataFrame()
    from datetime import datetime, timezone

    run = store.get_run(run_id)
    previous = store.latest_run_id(SUCCESSFUL, source=run.source, provider=run.provider, before=run_id,
                                   mode="probe")
    selection = select_changed(
        targets, catalog, store.catalog(previous) if previous is not None else None,
        store.findings(previous) if previous is not None else None, previous, now=datetime.now(timezone.utc),
        max_age_s=config.max_age_s if config.max_age_s is not None else DEFAULT_MAX_AGE_S,
        always={(c.model_id, c.provider) for group in canaries.values() for c in group},
        catalog_facts=config.source in ("hub", "router"))
    if previous is None:
        observer.warning("--changed-only: no earlier successful run of this scope, so every target is probed")
    observer.info(selection.describe())
    return selection.probe, selection.carried


def plan_scan(config: ScanConfig, store_path: str | None = None,
              observer: ScanObserver | None = None) -> ScanPlan:
    """The cost plan of a scan (``scan --plan``): the catalog is read, no chat request is sent, no run created.

    The rates of route checks, request experiments and retries come from the previous successful run of the
    same scope in ``store_path`` (opened read-only), when there is one.
    """
    from pathlib import Path

    from analysis.store import open_store, store_backend

    observer = observer or ScanObserver()
    config.validate()
    catalog, pricing = _load_catalog(config, observer)
    targets = _targets(config, catalog)
    canaries = choose_canaries(catalog, targets, config.canaries, config.canary_count, config.uses_suffix)
    previous = None
    if store_path is not None and (store_backend(store_path) != "sqlite" or Path(store_path).exists()):
        with open_store(store_path, readonly=True) as store:
            run_id = store.latest_run_id(SUCCESSFUL, source=config.source, provider=config.scope_provider,
                                         mode="probe")
            previous = store.probes(run_id) if run_id is not None else None
    return build_plan(catalog, targets, canaries, pricing=pricing, max_tokens=config.max_tokens,
                      concurrency=config.ceiling(len({t.provider for t in targets})),
                      previous=previous)


@_few_collections()
def resume_scan(store: Store, run_id: int | None, token: str | None,
                observer: ScanObserver | None = None, budget_usd: float | None = None) -> ScanOutcome:
    """Finish an interrupted (or killed) run: probe only the targets without a stored result.

    ``run_id=None`` picks the newest ``incomplete`` run.  A run still marked
    ``running`` whose process is gone (killed) was marked incomplete when the
    store was opened.  ``budget_usd`` replaces the run's own ``--budget-usd`` for this invocation.
    """
    observer = observer or ScanObserver()
    if run_id is None:
        candidates = store.runs()
        candidates = candidates[candidates["status"] == "incomplete"]
        if candidates.empty:
            raise UsageError(f"no incomplete run to resume in {store.path}")
        run_id = int(candidates["id"].max())
    run = store.get_run(run_id)
    if run.status == "running":
        raise _busy(run)
    if run.status != "incomplete":
        raise UsageError(f"run {run_id} is {run.status}, not incomplete: nothing to resume")
    known = {k: v for k, v in run.settings.items() if k in ScanConfig.__dataclass_fields__ and k != "token"}
    config = ScanConfig(**known, token=token)
    catalog = store.catalog(run_id)
    targets = [Target(m, p, s) for m, p, s in store.targets(run_id).itertuples(index=False, name=None)]
    if not targets:
        raise UsageError(f"run {run_id} stopped before its catalog was stored: start a new scan instead")
    if not store.claim_run(run_id):  # another resume took it between our read and now
        raise _busy(store.get_run(run_id))
    if not config.probe:
        return _finish_predicted(config, store, run_id, catalog, targets)
    by_key = {(t.model_string, t.provider): t for t in targets}
    canaries = {provider: [by_key.get((s, provider)) or _extra_canary(s, provider) for s in strings]
                for provider, strings in run.canaries.items()}
    observer.run_started(run_id)
    limit = budget_usd if budget_usd is not None else config.budget_usd
    pricing: Any = {}
    try:  # prices are not stored: ask the router again (one GET, no chat request), for the spend and the budget
        pricing = router_pricing(fetch_router_models(config.router_url, token, timeout=config.timeout))
    except CatalogError as exc:
        observer.warning(f"router prices unavailable, this invocation's answers are counted as unpriced: {exc}")
    return _probe_and_finish(config, store, run_id, catalog, targets, canaries, observer,
                             _budget(config, limit, pricing), pricing)


def _busy(run: Run) -> RunBusyError:
    return RunBusyError(f"run {run.id} is running in process {run.pid} on {run.host or 'this host'} "
                        f"(started {run.started_at}): resume it once that process has stopped")


def _extra_canary(model_string: str, provider: str) -> Target:
    suffix = f":{provider}"
    model_id = model_string[: -len(suffix)] if provider and model_string.endswith(suffix) else model_string
    return Target(model_id, provider, model_string)


# --------------------------------------------------------------------------- probing


class _Recorder:
    """Commits probe results in small batches as they arrive: a crash loses at most one batch."""

    def __init__(self, store: Store, run_id: int, batch_size: int, observer: ScanObserver, answers: _Answers,
                 spend: Spend) -> None:
        self.store = store
        self.answers = answers
        self.spend = spend
        self._saved = (0, 0, 0.0, 0)  # the spend already added to the run
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

    def save_spend(self) -> None:
        """Add what this invocation spent since the last save to the run (a resume adds its own)."""
        now = (self.spend.prompt_tokens, self.spend.completion_tokens, self.spend.usd, len(self.spend.unpriced))
        if now != self._saved:
            self.store.add_run_usage(self.run_id, prompt_tokens=now[0] - self._saved[0],
                                     completion_tokens=now[1] - self._saved[1], spent_usd=now[2] - self._saved[2],
                                     unpriced_answers=now[3] - self._saved[3])
            self._saved = now

    def __call__(self, result: ProbeResult) -> None:
        self.buffer.append(result)
        self.answers.add(result)
        self.spend.record(result.model_id, result.provider, result.model_string, result.billed(), result.usage(),
                          experiment=result.kind == "experiment")
        if result.kind == "primary":
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
        recorder.flush()
    except KeyboardInterrupt:
        _leave_incomplete(recorder, store, run_id)
        recorder.observer.probes_finished()
        raise ScanInterrupted(run_id, str(store.path), recorder.probed, total) from None
    except BaseException:
        _leave_incomplete(recorder, store, run_id)
        raise


def _leave_incomplete(recorder: _Recorder, store: Store, run_id: int) -> None:
    """Keep what can be kept and mark the run resumable, without masking the error that stopped it.

    On a full disk both writes may fail too: the run then stays ``running`` until the
    next command that opens the store sees its process gone and marks it incomplete.
    """
    try:
        recorder.flush()
    except StoreError:
        recorder.buffer.clear()
    try:
        recorder.save_spend()
        store.set_run_status(run_id, "incomplete")
    except StoreError:
        pass


class _Answers:
    """A run's answers by kind, kept up to date as results arrive (the recorder adds each one): the scan reads
    the store once, on resume, and never again mid-scan to rebuild what it already holds."""

    COLUMNS = ("kind", "model_id", "provider", "route_for", "model_string", "http_status", "outcome", "error_code",
               "error_message")

    def __init__(self) -> None:
        self.own: dict[tuple[str, str], Any] = {}  # (model_id, provider) -> its own answer (primary/canary)
        self.rechecked: dict[tuple[str, str, str], Any] = {}  # (kind, model_string, provider) -> recheck answer
        self.experiments: dict[tuple[str, str], Any] = {}
        self.routes: list[Any] = []  # route checks, in arrival order

    @classmethod
    def from_store(cls, probes: pd.DataFrame) -> "_Answers":
        """The answers already stored (a resumed run)."""
        answers = cls()
        for values in zip(*(probes[c].tolist() for c in cls.COLUMNS)):
            row = SimpleNamespace(**{c: None if is_missing(v) else v for c, v in zip(cls.COLUMNS, values)})
            row.http_status = None if row.http_status is None else int(row.http_status)
            answers.add(row)
        return answers

    def add(self, row: Any) -> None:
        """One answer (a :class:`ProbeResult`, or a stored row with the same fields)."""
        if row.kind in OWN_ANSWER_KINDS:
            self.own[(row.model_id, row.provider)] = row
        elif row.kind in ("canary_recheck", "majority_recheck"):
            self.rechecked[(row.kind, row.model_string, row.provider)] = row
        elif row.kind == "experiment":
            self.experiments[(row.model_id, row.route_for)] = row
        elif row.kind == "route":
            self.routes.append(row)

    def latest(self, target: Target, *recheck_kinds: str) -> Any:
        """A canary's newest answer: its recheck of one of ``recheck_kinds`` if there is one, else its own."""
        for kind in recheck_kinds:
            row = self.rechecked.get((kind, target.model_string, target.provider))
            if row is not None:
                return row
        return self.own.get((target.model_id, target.provider))


def _canary_faults(canaries: dict[str, list[Target]], answers: _Answers) -> dict[str, ProviderFault]:
    faults = {}
    for provider, group in canaries.items():
        results = [r for r in (answers.latest(c, "canary_recheck") for c in group) if r is not None]
        fault = judge_canaries(provider, results)
        if fault is not None:
            faults[provider] = fault
    return faults


def _transient_canaries(canaries: dict[str, list[Target]], answers: _Answers) -> list[Target]:
    """Canaries to re-probe once: transient answers in a provider where no canary answered yet."""
    todo = []
    for group in canaries.values():
        results = [(c, answers.own.get((c.model_id, c.provider))) for c in group]
        if any(r is not None and r.outcome == "chat" for _, r in results):
            continue
        todo += [c for c, r in results if r is not None and is_transient_answer(r)
                 and ("canary_recheck", c.model_string, c.provider) not in answers.rechecked]
    return todo


def _majority_faults(canaries: dict[str, list[Target]], answers: _Answers, faults: dict[str, ProviderFault],
                     recheck: Callable[[list[Target]], _Answers]) -> dict[str, ProviderFault]:
    """Providers where one refusal covers most answered targets and the canaries, probed again, agree."""
    by_provider: dict[str, list[Any]] = {}
    for (_, provider), row in answers.own.items():
        if provider not in faults:
            by_provider.setdefault(provider, []).append(row)
    found: dict[str, ProviderFault] = {}
    suspects: dict[str, str] = {}
    for provider, rows in by_provider.items():
        majority = majority_fault(provider, rows)
        if majority is None:
            continue
        signature, fault = majority
        if fault is not None:
            found[provider] = fault
        elif canaries.get(provider):
            suspects[provider] = signature
    if suspects:
        answers = recheck([c for p in suspects for c in canaries[p]])
        for provider, signature in suspects.items():
            results = [r for r in (answers.latest(c, "majority_recheck") for c in canaries[provider]) if r is not None]
            fault = judge_canaries(provider, results)
            if fault is not None and fault.signature == signature:
                found[provider] = fault
    return found


def _experiments(config: ScanConfig, catalog: pd.DataFrame, targets: list[Target], answers: _Answers,
                 faults: dict[str, ProviderFault]) -> list[Experiment]:
    """One request experiment for each refusal that may be about our request (none for a non-chat model)."""
    facts = {m: (tag, mapping) for m, tag, mapping in zip(catalog["model_id"], catalog["pipeline_tag"],
                                                           catalog["mapping"])}
    planned = []
    for target in targets:
        row = answers.own.get((target.model_id, target.provider))
        if (row is None or target.provider in faults or row.outcome != "http_error"
                or (target.model_id, target.provider) in answers.experiments):
            continue
        tag, mapping = facts.get(target.model_id, (None, None))
        _, task = mapping_facts(mapping, target.provider)
        if (isinstance(tag, str) and tag not in CHAT_PIPELINE_TAGS) or (task is not None and task != "conversational"):
            continue  # the catalog says non-chat: a refusal of our chat fields is non_chat_task, not our fault
        change = plan_change(row.http_status, row.error_code, row.error_message, max_tokens=config.max_tokens,
                             max_tokens_retry=config.max_tokens_retry)
        if change is not None:
            planned.append(Experiment(target, change))
    return planned


def _route_checks(config: ScanConfig, catalog: pd.DataFrame, answers: _Answers,
                  faults: dict[str, ProviderFault]) -> list[RouteCheck]:
    """Route checks still to do: refused primaries without a working experiment or a working or exhausted check."""
    mappings = dict(zip(catalog["model_id"], catalog["mapping"]))
    tried: dict[tuple[str, str], set[str]] = {}
    working: set[tuple[str, str]] = set()
    for route in answers.routes:
        tried.setdefault((route.model_id, route.route_for), set()).add(route.model_string)
        if route.outcome == "chat":
            working.add((route.model_id, route.route_for))
    checks = []
    for (model_id, provider), row in answers.own.items():
        if row.kind != "primary" or provider in faults or row.outcome != "http_error":
            continue
        kind = answer_kind(row.http_status, row.error_code, row.error_message)
        if row.http_status not in REFUSAL_STATUSES or kind in ("temporary", "token", "payment", "retired"):
            continue
        experiment = answers.experiments.get((model_id, provider))
        if (model_id, provider) in working or (experiment is not None and experiment.outcome == "chat"):
            continue
        target = Target(model_id, provider, row.model_string)
        alternatives = route_alternatives(target, mappings.get(model_id), config.route_checks)
        alternatives = [a for a in alternatives if a.model_string not in tried.get((model_id, provider), set())]
        if alternatives:
            checks.append(RouteCheck(target, tuple(alternatives)))
    return checks


def _probe_and_finish(config: ScanConfig, store: Store, run_id: int, catalog: pd.DataFrame,
                      all_targets: list[Target], canaries: dict[str, list[Target]],
                      observer: ScanObserver, budget: Budget | None = None, pricing: Any = None) -> ScanOutcome:
    """Canaries, the other targets, the majority rule, request experiments and route checks, then the verdicts.

    Every phase stores its probes as they arrive; a resumed run skips what is stored.  With ``--changed-only``
    only the targets that may have changed are probed; with a ``budget`` a phase starts only when all its
    requests fit in it (the big phase goes in chunks, re-checked between them), and the run stops incomplete
    otherwise.
    """
    settings = config.probe_settings(len({t.provider for t in all_targets}))
    targets, carried = _select(config, store, run_id, catalog, all_targets, canaries, observer)
    # What a resumed run already holds; then kept in memory.
    answers = _Answers.from_store(store.probes(run_id, attempt_logs=False))
    target_keys = {(t.model_id, t.provider) for t in targets}
    spend = budget.spend if budget is not None else Spend(pricing or {}, config.max_tokens, config.max_tokens_retry)
    recorder = _Recorder(store, run_id, config.batch_size, observer, answers, spend)
    recorder.probed = len(target_keys & set(answers.own))
    total = len(targets)
    observer.probes_started(total, recorder.probed)

    def phase(factory: Callable[[], Coroutine[Any, Any, list[ProbeResult]]]) -> _Answers:
        _run_phase(factory, recorder, store, run_id, total)
        return answers

    def afford(requests: list[Target], max_tokens: int | None = None) -> None:
        """Stop before a phase whose requests could pass the budget."""
        if budget is not None and not budget.fits(requests, max_tokens):
            _stop_for_budget()

    def _stop_for_budget() -> None:
        assert budget is not None
        _leave_incomplete(recorder, store, run_id)
        observer.probes_finished()
        raise BudgetExhausted(run_id, str(store.path), budget, recorder.probed, total)

    # Phase 1: canaries, per provider.  Canaries from the catalog are targets too: not probed twice.
    todo = [c for group in canaries.values() for c in group if (c.model_id, c.provider) not in answers.own]
    if todo:
        inside = [c for c in todo if (c.model_id, c.provider) in target_keys]
        outside = [c for c in todo if (c.model_id, c.provider) not in target_keys]

        async def canary_phase() -> list[ProbeResult]:
            # Each probe_targets call opens its own connections: skip the empty ones.
            results = await probe_targets(inside, settings, recorder) if inside else []
            return results + (await probe_targets(outside, settings, recorder, kind="canary") if outside else [])

        afford(todo)
        answers = phase(canary_phase)
    again = _transient_canaries(canaries, answers)
    if again:
        afford(again)
        answers = phase(lambda: probe_targets(again, settings, recorder, kind="canary_recheck"))
    faults = _canary_faults(canaries, answers)
    for line in describe_faults(faults, config.router_url):
        observer.warning(line)

    # Phase 2: every other target of the providers whose canaries passed, the slowest of the last run first.
    remaining = [t for t in targets if t.provider not in faults and (t.model_id, t.provider) not in answers.own]
    expected = _expected_seconds(store, run_id) if remaining else {}
    if remaining and budget is None:
        answers = phase(lambda: probe_targets(remaining, settings, recorder, expected_s=expected))
    elif remaining and budget is not None:
        # In chunks, re-checked between them: a prompt larger than assumed is learnt before it adds up.
        chunk_size = max(64, settings.concurrency * 4)
        while remaining:
            fits = min(budget.affordable(remaining), chunk_size)
            if not fits:
                _stop_for_budget()
            chunk, remaining = remaining[:fits], remaining[fits:]
            answers = phase(functools.partial(probe_targets, chunk, settings, recorder, expected_s=expected))

    # The majority rule: one refusal on most of a provider's answers is a run-level suspect.
    def recheck(group: list[Target]) -> _Answers:
        fresh = [c for c in group if ("majority_recheck", c.model_string, c.provider) not in answers.rechecked]
        afford(fresh)
        return phase(lambda: probe_targets(fresh, settings, recorder, kind="majority_recheck")) if fresh else answers

    faults.update(_majority_faults(canaries, answers, faults, recheck))

    # Phase 3: request experiments, at most one per target.
    experiments = _experiments(config, catalog, targets, answers, faults)
    if experiments:
        afford([e.target for e in experiments], config.max_tokens_retry)  # a provider may ignore stream=true
        observer.experiments_started(len(experiments))
        answers = phase(lambda: run_experiments(experiments, settings, recorder))

    # Phase 4: route checks for targets still refused.
    if config.route_checks > 0:
        checks = _route_checks(config, catalog, answers, faults)
        if checks:
            afford([route for check in checks for route in check.routes])
            observer.route_checks_started(len(checks))
            answers = phase(lambda: check_routes(checks, settings, recorder))
    observer.probes_finished()
    try:
        # every probe is stored by now: the verdicts read them once (not their attempt logs, which they never use)
        recorder.save_spend()
        outcome = _finish_probed(config, store, run_id, catalog, targets, store.probes(run_id, attempt_logs=False),
                                 faults, carried)
        outcome.spend = spend
        return outcome
    except StoreError:
        _leave_incomplete(recorder, store, run_id)  # every probe is stored: a resume only judges
        raise


# --------------------------------------------------------------------------- finishing


def _with_history(store: Store, run_id: int, findings: pd.DataFrame, catalog: pd.DataFrame,
                  policy: PersistencePolicy) -> pd.DataFrame:
    """Apply the persistent-failure policy, then add history columns and alternatives.

    Carried rows and the unjudged rows of a faulted provider are no evidence of this
    run: they neither add to a failing streak nor end one.
    """
    run = store.get_run(run_id)
    previous = store.scope_history(run.source, run.provider, before=run_id)
    findings = apply_persistence(findings, previous, run.started_at, policy)
    judged = findings[~findings["carried"].astype(bool) & ~findings["reason"].isin(RUN_LEVEL)]
    current = judged[["model_id", "provider", "reason"]].assign(run_id=run_id, run_started_at=run.started_at)
    summary = summarise_history(pd.concat([previous, current], ignore_index=True), policy.flap_window)
    findings = findings.drop(columns=[c for c in HISTORY_COLUMNS if c in findings.columns])
    findings = findings.merge(summary.drop(columns=["runs_seen"]), on=["model_id", "provider"], how="left")
    findings["alternatives"] = suggest_alternatives(findings, catalog)
    return findings


def _finish_predicted(config: ScanConfig, store: Store, run_id: int, catalog: pd.DataFrame,
                      targets: list[Target]) -> ScanOutcome:
    run = store.get_run(run_id)
    findings = predict(catalog, targets, run.started_at)
    findings["alternatives"] = [[] for _ in range(len(findings))]
    return _finish_ok(config, store, run_id, findings, len(targets))


def _fault_record(fault: ProviderFault, router_url: str) -> dict[str, str]:
    return {"reason": fault.reason, "cause": fault.cause, "hint": fault.hint(router_url),
            "signature": fault.signature, "evidence": fault.evidence}


def _fault_message(faults: dict[str, ProviderFault], router_url: str, partial: bool) -> str:
    tail = ("the other providers were judged; the faulted ones keep their blocklist rows from their last successful "
            "run" if partial else "Nothing was blocked")
    single = len({f.reason for f in faults.values()}) == 1 and not partial  # the reason is said beside it
    return "; ".join(describe_faults(faults, router_url, with_reason=not single)) + f". {tail}."


def _finish_probed(config: ScanConfig, store: Store, run_id: int, catalog: pd.DataFrame, targets: list[Target],
                   probes: pd.DataFrame, faults: dict[str, ProviderFault],
                   carried: pd.DataFrame | None = None) -> ScanOutcome:
    """Verdicts for a probed run: ok, partial (some providers faulted) or failed (all of them).

    ``carried``: verdicts kept from the previous run (``--changed-only``), added beside this run's own."""
    providers = {t.provider for t in targets}
    faulted = {p: (f.reason, f"{f.reason}: {f.hint(config.router_url)}") for p, f in faults.items()}
    all_faulted = bool(faults) and providers <= set(faults)
    if faults:
        store.set_faulted(run_id, {p: _fault_record(f, config.router_url) for p, f in faults.items()})
    findings = diagnose(catalog, probes, run_ok=not all_faulted, targets=targets, faulted=faulted)
    if all_faulted:
        first = faults[sorted(faults)[0]]
        return _fail_run_level(store, run_id, first.reason, _fault_message(faults, config.router_url, False),
                               "; ".join(f.evidence for f in faults.values()), findings)
    if carried is not None and len(carried):
        findings = pd.concat([findings, carried[[c for c in findings.columns if c in carried.columns]]],
                             ignore_index=True)
    if faults:
        findings = _carry_forward(store, run_id, findings, faults)
    findings = _with_history(store, run_id, findings, catalog,
                             PersistencePolicy(config.persistent_after, config.persistent_min_hours))
    outcome = _finish_ok(config, store, run_id, findings, len(findings), partial=bool(faults))
    if faults:
        outcome.message = _fault_message(faults, config.router_url, True)
        outcome.failure_reason = faults[sorted(faults)[0]].reason
    return outcome


def _carry_forward(store: Store, run_id: int, findings: pd.DataFrame, faults: dict[str, ProviderFault]) -> pd.DataFrame:
    """A faulted provider keeps the blocked rows of its last successful run, marked carried: a fault never
    unblocks anything."""
    run = store.get_run(run_id)
    carried = []
    for provider, fault in faults.items():
        source_run, rows = store.last_judged_blocklist(run.source, run.provider, provider, run_id)
        if source_run is None or rows.empty:
            continue
        rows = rows.copy()
        rows["carried"] = True
        rows["note"] = [f"carried from run {source_run} (checked {c}): {provider or 'the bare route'} had a "
                        f"run-level fault in this run ({fault.reason})" for c in rows["checked_at"]]
        carried.append(rows)
    if not carried:
        return findings
    rows = pd.concat(carried, ignore_index=True)
    keys = set(zip(rows["model_id"], rows["provider"]))
    keep = [(m, p) not in keys for m, p in zip(findings["model_id"], findings["provider"])]
    rows = rows[[c for c in findings.columns if c in rows.columns]]
    return pd.concat([findings[keep], rows], ignore_index=True)


def _finish_ok(config: ScanConfig, store: Store, run_id: int, findings: pd.DataFrame, total: int,
               partial: bool = False) -> ScanOutcome:
    store.save_findings(run_id, findings)
    counts = _outcome_counts(findings)
    status = "partial" if partial else "ok"
    faulted = store.get_run(run_id).faulted
    store.finish_run(run_id, status, counts=counts, n_targets=total, n_probed=len(findings),
                     n_ok=counts.get("ok", 0), n_blocked=int(findings["blocked"].sum()),
                     n_transient=sum(v for k, v in counts.items() if k in TRANSIENT),
                     failure_reason=next(iter(faulted.values()))["reason"] if faulted else None,
                     failure_message="; ".join(f"{p or 'bare route'}: {f['hint']} [{f['evidence']}]"
                                               for p, f in sorted(faulted.items())) or None)
    run = store.get_run(run_id)
    outcome = ScanOutcome(run_id, status, EXIT_RUN_LEVEL if partial else EXIT_OK, counts, findings,
                          duration_s=run.duration_s or 0.0)
    if config.fail_on == "new-blocked" and config.probe:
        previous = store.latest_run_id(SUCCESSFUL, source=run.source, provider=run.provider, before=run_id,
                                       mode="probe")
        if previous is None:
            newly = findings[findings["blocked"]][["model_id", "provider", "reason"]]
        elif store.get_run(previous).taxonomy_version != run.taxonomy_version:
            # Verdicts of another taxonomy version are no baseline: every changed rule would "newly block".
            newly = findings.iloc[0:0][["model_id", "provider", "reason"]]
            outcome.taxonomy_changed = True
        else:
            newly = newly_blocked(store.findings(previous), findings)
        outcome.newly_blocked = newly.reset_index(drop=True)
        outcome.previous_run_id = previous
        if len(newly) and not partial:
            outcome.exit_code = EXIT_FAIL_ON
    return outcome


def _fail_run_level(store: Store, run_id: int, reason: str, message: str, evidence: str,
                    findings: pd.DataFrame) -> ScanOutcome:
    """Store a run-level failure: nothing from it is blocked, and no model in it is judged."""
    if len(findings):
        # A refusal there is evidence about the setup; the per-model answer stays in `detail`.
        findings = findings.copy()
        findings["blocked"] = False
        # ok stays ok; a faulted provider's rows keep their own run-level reason (several may differ)
        judged = (findings["reason"] == "ok") | findings["reason"].isin(RUN_LEVEL)
        info = reason_info(reason)
        findings.loc[~judged, "reason"] = reason
        findings.loc[~judged, "action"] = info.action
        findings.loc[~judged, "message"] = [user_message(reason, m) for m in findings.loc[~judged, "model_id"]]
        findings["note"] = [f"run failed ({reason}): not judged" + (f"; {n}" if n else "")
                            if not ok or r in RUN_LEVEL else n
                            for ok, r, n in zip(judged, findings["reason"], findings["note"].fillna(""))]
        store.save_findings(run_id, findings)
    message = scrub(message)
    counts = _outcome_counts(findings) if len(findings) else {}
    store.finish_run(run_id, "failed", failure_reason=reason, failure_message=f"{message} [{evidence}]",
                     counts=counts, n_probed=len(findings), n_blocked=0)
    run = store.get_run(run_id)
    return ScanOutcome(run_id, "failed", EXIT_RUN_LEVEL, counts, findings, reason, message, run.duration_s or 0.0)
