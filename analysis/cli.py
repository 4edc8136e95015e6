"""``python -m analysis``: the command line.  Each command calls one package function.

This module, ``app.py`` and :mod:`analysis.config` (the paths) are the only places
that read the environment; the token comes from ``HF_TOKEN`` and nowhere else.

Exit codes: 0 ok; 1 a ``--fail-on`` condition holds; 2 bad usage or input;
3 run-level failure (token, credits, endpoint, account settings, an outage; a
partial run; no run to publish a blocklist from); 4 internal error (a bug);
130 interrupted.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import sqlite3
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace as Args
from typing import TYPE_CHECKING, Any, Callable, Sequence

import click

from analysis import __version__, config
from analysis.config import SOURCES, ScanConfig
from analysis.errors import EXIT_OK, EXIT_USAGE, RcaError, SettingError, UsageError, scrub
from analysis.pipeline.observer import ScanObserver
from analysis.taxonomy import BLOCKING, REASON_NAMES, RUN_LEVEL, TRANSIENT
from analysis.untrusted import show_controls, terminal_line

if TYPE_CHECKING:  # for annotations only: --help must not import pandas
    import pandas as pd

    from analysis.pipeline.scan import ScanOutcome
    from analysis.schema import Run
    from analysis.store import Store

__all__ = ["main", "cli"]

EXIT_INTERNAL = 4


def _token() -> str | None:
    token = os.environ.get("HF_TOKEN", "").strip()
    return token or None


def _err(text: str) -> None:
    """One line on stderr; upstream text in it is shown with control characters escaped (:func:`terminal_line`)."""
    print(terminal_line(scrub(text, _token())), file=sys.stderr)


def _out(text: str) -> None:
    """One line on stdout, through the same terminal boundary as :func:`_err`."""
    print(terminal_line(text))


# --------------------------------------------------------------------------- progress


class CliObserver(ScanObserver):
    """Progress on stderr: a tqdm bar when stderr is a terminal, a few plain lines otherwise."""

    def __init__(self, quiet: bool = False) -> None:
        self.on_run: Callable[[int], Any] | None = None  # told the run id (the scope's lease records it)
        # Raises LeaseLostError (exit 3) once another scan took the scope over after this one's heartbeat stalled:
        # the run then stops incomplete instead of two scans writing one scope.
        self.lease_check: Callable[[], None] | None = None
        self._checked_at = 0.0
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.bar = None

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(terminal_line(text), file=sys.stderr, flush=True)

    def run_started(self, run_id: int) -> None:
        if self.on_run is not None:
            self.on_run(run_id)
        self._say(f"run {run_id}: reading the catalog")

    def canaries_chosen(self, canaries: dict[str, list[str]]) -> None:
        for provider, strings in sorted(canaries.items()):
            self._say(f"  canaries{f' for {provider}' if provider else ''}: {', '.join(strings) or 'none found'}")

    def catalog_page(self, pages: int, models: int) -> None:
        if self.tty and not self.quiet:
            print(f"\r  catalog: page {pages}, {models} models", end="", file=sys.stderr, flush=True)

    def catalog_done(self, models: int, targets: int, router_listed: int | None) -> None:
        if self.tty and not self.quiet:
            print(file=sys.stderr)
        listed = "router list unavailable" if router_listed is None else f"{router_listed} listed by the router"
        self._say(f"  catalog: {models} models, {targets} targets to probe, {listed}")

    def warning(self, text: str) -> None:
        _err(f"warning: {text}")

    def info(self, text: str) -> None:
        self._say(f"  {text}")

    def probes_started(self, total: int, already_done: int) -> None:
        if self.tty and not self.quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=already_done, unit="model", file=sys.stderr, desc="  probing",
                            dynamic_ncols=True)
        else:
            self._say(f"  probing {total - already_done} targets" +
                      (f" ({already_done} already done)" if already_done else ""))

    def probe_done(self, result: Any, counts: dict[str, int]) -> None:
        if self.lease_check is not None and time.monotonic() - self._checked_at >= 1.0:
            self._checked_at = time.monotonic()
            self.lease_check()
        if self.bar is not None:
            if result.kind == "primary":  # rechecks, experiments and route checks are extra evidence, not targets
                self.bar.update(1)
            self.bar.set_postfix_str(", ".join(f"{k}={v}" for k, v in sorted(counts.items())), refresh=False)

    def probes_finished(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def experiments_started(self, targets: int) -> None:
        if self.bar is not None:
            self.bar.set_description_str("  probing + request experiments")
        else:
            self._say(f"  request experiments for {targets} targets refused for our request")

    def route_checks_started(self, targets: int) -> None:
        if self.bar is not None:
            self.bar.set_description_str("  probing + route checks")
        else:
            self._say(f"  route checks for {targets} refused targets")


def _summary(outcome: ScanOutcome, store_path: str) -> str:
    predicted = len(outcome.findings) and "predicted" in outcome.findings and outcome.findings["predicted"].any()
    judged = sum(outcome.counts.values())
    what = f"{judged} targets" if judged or outcome.status != "failed" else "stopped before any model was judged"
    lines = [f"run {outcome.run_id} {outcome.status}: {what} in {outcome.duration_s:.1f} s"
             + (" (PREDICTED from metadata, nothing probed or blocked)" if predicted else "")]
    if outcome.counts:
        width = max(len(r) for r in outcome.counts)
        lines.append(f"  {'reason'.ljust(width)}  count  blocks")
        for reason in REASON_NAMES:
            if reason in outcome.counts:
                if outcome.status == "failed":
                    blocks = "no (run failed)"
                elif predicted:
                    blocks = "no (predicted)"
                else:
                    blocks = "yes" if reason in BLOCKING else ("run" if reason in RUN_LEVEL else "no")
                lines.append(f"  {reason.ljust(width)}  {outcome.counts[reason]:5d}  {blocks}")
    spend = outcome.spend
    if spend is not None and spend.answers:
        from analysis.outputs.explain import spend_sentence

        lines.append("  " + (spend_sentence(spend.prompt_tokens, spend.completion_tokens, spend.usd,
                                            len(spend.unpriced)) or ""))
    if outcome.status in ("ok", "partial"):
        blocked = int(outcome.findings["blocked"].sum()) if len(outcome.findings) else 0
        transient = sum(v for k, v in outcome.counts.items() if k in TRANSIENT)
        lines.append(f"  blocked {blocked}, transient {transient}. Blocklist: python -m analysis export blocklist "
                     f"--store {store_path}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- commands


def _rate_pins(specs: Sequence[str]) -> dict[str, float]:
    from analysis.pipeline.ratecontrol import parse_rate_pins

    try:
        return parse_rate_pins(specs)
    except ValueError as exc:
        raise UsageError(f"--rate: {exc}") from None


def _resume_scope(store: Store, run_id: int | None) -> tuple[str, str, int] | None:
    """The (source, provider, run) a resume will lease; ``None`` when there is no such run (resume says why)."""
    if run_id is None:
        runs = store.runs()
        runs = runs[runs["status"] == "incomplete"]
        if runs.empty:
            return None
        run_id = int(runs["id"].max())
    try:
        run = store.get_run(run_id)
    except RcaError:
        return None
    return str(run.source), str(run.provider), run_id


def cmd_scan(args: Args) -> int:
    from analysis.pipeline.scan import resume_scan, run_scan
    from analysis.store import hold_lease, open_store

    observer = CliObserver(args.quiet)
    scan_config = None
    if args.resume is None:
        scan_config = ScanConfig(hub_url=args.hub_url, router_url=args.router_url, provider=args.provider,
                            source=args.source, catalog_file=args.catalog_file, route=args.route,
                            concurrency=args.concurrency, rate_pins=_rate_pins(args.rate),
                            timeout=args.timeout, retries=args.retries,
                            max_tokens=args.max_tokens, max_tokens_retry=args.max_tokens_retry,
                            backoff=args.backoff,
                            retry_after_cap=args.retry_after_cap, hub_limit=args.hub_limit,
                            batch_size=args.batch_size, route_checks=args.route_checks,
                            canaries=list(args.canary or []), probe=not args.no_probe,
                            persistent_after=args.persistent_after,
                            persistent_min_hours=args.persistent_min_hours, fail_on=args.fail_on,
                            changed_only=args.changed_only, max_age_s=args.max_age, budget_usd=args.budget_usd,
                            token=_token())
        scan_config.validate()  # before the store is created: bad flags leave no file behind
        if args.plan:
            return _print_plan(scan_config, args, observer)
    else:
        if args.budget_usd is not None and not 0 < args.budget_usd < math.inf:
            raise UsageError(f"--budget-usd must be a finite amount > 0 (got {args.budget_usd})")
        ignored = args.ignored_with_resume
        if ignored:
            _err(f"warning: ignored with --resume (the run keeps its own settings): {', '.join(ignored)}")
    # One scan at a time per scope: the lease is taken once the store exists, and held to the end of the run.
    with open_store(args.store, create=scan_config is not None) as store:  # a resume never creates a store
        if scan_config is None:
            run_id = None if args.resume == "latest" else _int(args.resume, "--resume")
            scope = _resume_scope(store, run_id)
            with hold_lease(args.store, scope[0], scope[1], run_id=scope[2], wait_s=args.wait) if scope \
                    else contextlib.nullcontext() as keeper:
                observer.lease_check = keeper.check if keeper is not None else None
                outcome = resume_scan(store, run_id, _token(), observer, budget_usd=args.budget_usd)
        else:
            with hold_lease(args.store, scan_config.source, scan_config.scope_provider, wait_s=args.wait) as keeper:
                observer.on_run, observer.lease_check = keeper.set_run, keeper.check
                outcome = run_scan(scan_config, store, observer)
    print(_summary(outcome, _shown(args.store)))
    urls = list(args.notify or []) + [u for u in os.environ.get("RCA_NOTIFY_URLS", "").replace(",", " ").split() if u]
    if urls:
        _notify(urls, args.store, outcome.run_id, args.app_url, args.notify_always)
    if outcome.status != "ok":
        _err(f"error: {outcome.failure_reason}: {outcome.message}")
    if outcome.taxonomy_changed:
        _err(f"fail-on new-blocked: run {outcome.previous_run_id} was judged by another taxonomy version; nothing is "
             "compared against it (the next run will be)")
    elif outcome.newly_blocked is not None:
        since = f"run {outcome.previous_run_id}" if outcome.previous_run_id else "an empty blocklist (no earlier run)"
        if len(outcome.newly_blocked):
            _err(f"fail-on new-blocked: {len(outcome.newly_blocked)} newly blocked since {since}:")
            for row in outcome.newly_blocked.itertuples(index=False):
                _err(f"  {row.model_id} {row.provider} {row.reason}")
        else:
            _err(f"fail-on new-blocked: nothing newly blocked since {since}")
    return outcome.exit_code


def _notify(urls: list[str], store_path: str, run_id: int, app_url: str | None, always: bool) -> None:
    """Post one message about the run to each URL, on transitions only (or always).  A failed notification is a
    warning and never fails the scan; the URLs are secrets: never stored, never printed whole."""
    import json
    from urllib.parse import urlsplit

    import httpx

    from analysis.outputs.notify import build_message
    from analysis.store import SUCCESSFUL, open_store

    with open_store(store_path, readonly=True) as store:
        run = store.get_run(run_id)
        findings = store.findings(run_id)
        earlier = store.latest_run_id(None, source=run.source, provider=run.provider, before=run_id)
        judged = store.latest_run_id(SUCCESSFUL, source=run.source, provider=run.provider, before=run_id,
                                     mode="probe")
        message = build_message(run, findings, store.findings(judged) if judged is not None else None,
                                store.get_run(earlier) if earlier is not None else None, app_url=app_url,
                                always=always)
    if message is None:
        _err("notify: nothing changed since the previous run; no message sent (--notify-always sends one anyway)")
        return
    body = scrub(json.dumps(message), _token()).encode("utf-8")
    for url in urls:
        where = urlsplit(url).hostname or "the notify URL"
        tries = 0
        for wait in (0.0, 0.5, 1.5, 3.0):  # about 10 s in all, timeouts included
            time.sleep(wait)
            tries += 1
            try:
                answer = httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=2.0)
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            else:
                if answer.status_code < 300:
                    _err(f"notify: sent to {where}")
                    break
                problem = f"HTTP {answer.status_code}"
        else:
            _err(f"warning: notify: {where} did not take the message ({problem}, {tries} attempts); the scan "
                 "is unaffected")


def _print_plan(scan_config: ScanConfig, args: Args, observer: ScanObserver) -> int:
    import json

    from analysis.pipeline.scan import plan_scan

    plan = plan_scan(scan_config, args.store, observer)
    if args.format == "json":
        sys.stdout.write(json.dumps(plan.as_dict(), indent=2) + "\n")
    else:
        for line in plan.lines():
            _out(line)
    return EXIT_OK


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{flag} takes a run id (a number), got {text!r}") from None


def _resolve_run(store: Store, run: str | None, mode: str | None = None) -> tuple[int | None, Run | None]:
    if run is None:
        run_id = store.latest_run_id(mode=mode)
        return run_id, (store.get_run(run_id) if run_id is not None else None)
    run_id = _int(run, "--run")
    return run_id, store.get_run(run_id)


def _write_output(data: bytes, out: str | None) -> None:
    """Write to stdout, or to ``out``: a regular file is replaced atomically (a reader never
    sees half a blocklist); a symlink, FIFO or device is written through, never replaced."""
    if out is None or out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"--out {out} is a directory; give a file name")
    try:
        if path.is_symlink() or (path.exists() and not path.is_file()):
            with open(path, "wb") as fh:
                fh.write(data)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise UsageError(f"cannot write --out {out}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the file from the gateway's user
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cmd_export(args: Args) -> int:
    from analysis.outputs.export import Provenance, export_bytes
    from analysis.outputs.views import publishable_run
    from analysis.store import open_store

    reasons = None
    if args.reasons:
        reasons = {r.strip() for r in args.reasons.split(",") if r.strip()}
        unknown = reasons - set(REASON_NAMES)
        if unknown:
            raise UsageError(f"unknown reason(s) {', '.join(sorted(unknown))}; known: {', '.join(REASON_NAMES)}")
        run_level = reasons & RUN_LEVEL
        if run_level:
            raise UsageError(f"--reasons cannot block run-level reasons ({', '.join(sorted(run_level))}): they are "
                             "faults of the setup, never of a model")
    with open_store(args.store, readonly=True) as store:
        if args.what in ("blocklist", "routes"):
            run_id = publishable_run(store, _int(args.run, "--run") if args.run is not None else None,
                                     args.max_age)
        else:
            found, run = _resolve_run(store, args.run)
            if found is None or run is None:
                raise UsageError(f"no successful run in {_shown(args.store)}; pass --run ID to export another run")
            run_id = found
        findings = _with_overrides(store, store.findings(run_id))
        provenance = Provenance.of_run(args.what, store.get_run(run_id))
    _write_output(export_bytes(args.what, findings, args.format, reasons, provenance), args.out)
    if args.out not in (None, "-"):
        _err(f"wrote {args.what} of run {run_id} to {args.out}")
    return EXIT_OK


def _with_overrides(store: Store, findings: pd.DataFrame) -> pd.DataFrame:
    """The operators' overrides in force applied; an expired one is said once on stderr, and not applied."""
    from datetime import datetime, timezone

    from analysis.outputs.overrides import apply_overrides, describe, expired

    now = datetime.now(timezone.utc)
    rules = store.overrides()
    for rule in expired(rules, now).to_dict("records"):
        target = rule["model_id"] + (f":{rule['provider']}" if rule["provider"] else "")
        _err(f"note: override {rule['id']} of {target} has expired and no longer applies ({describe(rule)})")
    return apply_overrides(findings, rules, now)


def cmd_override(args: Args) -> int:
    import getpass
    from datetime import datetime, timezone

    from analysis.outputs.overrides import describe, expired
    from analysis.store import open_store

    if args.action == "add":
        from analysis.pipeline.canaries import parse_canary

        model_id, named = parse_canary(args.target)
        provider = named or ""
        if not model_id or (args.allow == args.block):
            raise UsageError("override add needs MODEL[:PROVIDER] and exactly one of --allow or --block")
        if not args.reason.strip():
            raise UsageError("override add needs --reason TEXT: say why, for whoever reads the blocklist next")
        expires = None
        if args.expires:
            try:
                when = datetime.fromisoformat(args.expires.replace("Z", "+00:00"))
            except ValueError:
                raise UsageError(f"--expires takes a date or time (2026-12-31, 2026-12-31T18:00Z), got "
                                 f"{args.expires!r}") from None
            when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
            if when <= datetime.now(timezone.utc):
                raise UsageError(f"--expires {args.expires} is in the past")
            expires = when.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        with open_store(args.store, create=False) as store:
            number = store.add_override(model_id=model_id, provider=provider, action="allow" if args.allow
                                        else "block", reason=args.reason.strip(), author=getpass.getuser(),
                                        expires_at=expires)
        _out(f"override {number}: {'allow' if args.allow else 'block'} {args.target}")
        return EXIT_OK
    if args.action == "remove":
        with open_store(args.store, create=False) as store:
            if not store.remove_override(_int(args.target, "override remove")):
                raise UsageError(f"no override {args.target} in {_shown(args.store)}")
        _out(f"removed override {args.target}")
        return EXIT_OK
    with open_store(args.store, readonly=True) as store:
        rules = store.overrides()
    old = set(expired(rules, datetime.now(timezone.utc))["id"]) if len(rules) else set()
    if rules.empty:
        _out("no overrides")
    for rule in rules.to_dict("records"):
        target = rule["model_id"] + (f":{rule['provider']}" if rule["provider"] else "")
        _out(f"{rule['id']:>4}  {target}  {describe(rule)}{'  [EXPIRED: not applied]' if rule['id'] in old else ''}")
    return EXIT_OK


def cmd_diff(args: Args) -> int:
    import json

    from analysis.outputs.export import csv_bytes
    from analysis.outputs.views import run_diff
    from analysis.store import open_store

    with open_store(args.store, readonly=True) as store:
        if args.to is None:
            to_run = store.latest_run_id(mode="probe")
            if to_run is None:
                raise UsageError(f"no successful probing run in {_shown(args.store)}")
        else:
            to_run = _int(args.to, "--to")
            store.get_run(to_run)
        from_run = _int(args.from_, "--from") if args.from_ is not None else store.previous_ok_run(to_run)
        if from_run is None:
            raise UsageError(f"run {to_run} has no earlier successful run of the same scope; pass --from RUN")
        before, after = store.get_run(from_run), store.get_run(to_run)
        versions = (before.taxonomy_version, after.taxonomy_version)
        diff = run_diff(store, from_run, to_run)
    for run in (before, after):
        if run.status not in ("ok", "partial"):
            _err(f"warning: run {run.id} is {run.status}: it judged no model (or not all), so its side of "
                 "the comparison is not evidence")
    if (before.source, before.provider) != (after.source, after.provider):
        _err(f"warning: run {from_run} ({before.source} {before.provider}) and run {to_run} "
             f"({after.source} {after.provider}) scanned different scopes: targets outside both show as new")
    if versions[0] != versions[1]:
        _err(f"note: run {from_run} and run {to_run} were judged by different rules (taxonomy version "
             f"{versions[0]} -> {versions[1]}): some changes below come from the rules, not from the models")
    if args.format == "json":
        payload = {"from_run": from_run, "to_run": to_run,
                   "changes": json.loads(diff.to_json(orient="records"))}
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    elif args.format == "csv":
        sys.stdout.buffer.write(csv_bytes(diff, list(diff.columns)))
    else:
        _out(f"run {from_run} -> run {to_run}: " + ", ".join(
            f"{(diff['change'] == c).sum()} {c.replace('_', ' ')}" for c in ("newly_blocked", "recovered",
                                                                             "reason_changed")))
        for row in diff.itertuples(index=False):
            before_reason = row.from_reason if isinstance(row.from_reason, str) and row.from_reason else "(new)"
            _out(f"  {row.change!s:15} {row.model_id!s} {row.provider or '-'!s}: {before_reason} -> {row.to_reason!s}")
    return EXIT_OK


def cmd_prune(args: Args) -> int:
    from analysis.store import open_store

    with open_store(args.store, create=False) as store:
        deleted = store.prune(args.keep)
        if deleted and args.vacuum:
            store.vacuum()
    print(f"deleted {len(deleted)} run(s)" + (f": {', '.join(map(str, deleted))}" if deleted else "")
          + f"; kept the {args.keep} newest")
    return EXIT_OK


def cmd_simulate(args: Args) -> int:
    import json

    from analysis.devtools.simulator import default_scenario, load_scenario, serve, synthetic_scenario

    if args.synthetic:
        scenario = synthetic_scenario(args.synthetic, args.latency_ms if args.latency_ms is not None else 50.0,
                                      page_cap=args.page_cap or 1000)
    elif args.scenario:
        try:
            scenario = load_scenario(args.scenario)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot load scenario {args.scenario}: {exc}") from None
    else:
        scenario = default_scenario()
    if args.latency_scale is not None:
        scenario.router["latency_scale"] = args.latency_scale
    if args.page_cap and not args.synthetic:
        scenario.hub["page_cap"] = args.page_cap
    if args.require_token:
        if not _token():
            raise UsageError("--require-token needs HF_TOKEN set: the simulator then accepts only that token")
        scenario.token = _token()
    if args.write_scenario:
        data = scenario.to_dict()
        data["token"] = None  # a token never goes to a file; --require-token sets it at start
        Path(args.write_scenario).write_text(json.dumps(data, indent=1))
        _err(f"wrote scenario {scenario.name!r} ({len(scenario.models)} models) to {args.write_scenario}")
        return EXIT_OK

    def ready(url: str) -> None:
        print(f"simulator {scenario.name!r} with {len(scenario.models)} models on {url}\n"
              f"  --hub-url {url}\n  --router-url {url}/v1\n"
              f"  retired API (410): {url}/retired/v1   no credits (402): {url}/nocredits/v1\n"
              f"  wrong path (404): {url}/wrongpath/v1   OpenAI-compatible gateway: {url}/openai/v1\n"
              f"  every provider switched off in the account: {url}/noproviders/v1\n"
              f"  token without the Inference Providers permission (403): {url}/noperm/v1\n"
              f"  stats: {url}/_sim/stats   (Ctrl-C stops)", flush=True)

    try:
        serve(scenario, args.host, args.port, on_ready=ready)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def cmd_demo(args: Args) -> int:
    from analysis.devtools.sample import build_sample_store

    out = Path(args.out_dir) if args.out_dir else config.data_dir()
    started = time.perf_counter()
    observer = CliObserver(quiet=not args.verbose)
    result = build_sample_store(out / "sample.sqlite", out / "sample-blocklist.csv", observer=observer,
                                on_step=lambda text: _err(text))
    for label, outcome in result.outcomes:
        print(f"== {label}")
        print(_summary(outcome, str(result.store_path)))
        if outcome.status != "ok":
            _out(f"  -> {outcome.failure_reason}: {outcome.message}")
    print(f"\nwrote {result.store_path} and {result.blocklist_path} in {time.perf_counter() - started:.1f} s "
          "(offline, against the built-in simulator)")
    return EXIT_OK


def cmd_store_copy(args: Args) -> int:
    from analysis.store import copy_store

    started = time.perf_counter()
    counts = copy_store(args.source, args.target)
    _out(f"copied {_shown(args.source)} -> {_shown(args.target)} in {time.perf_counter() - started:.1f} s: "
         + ", ".join(f"{rows} {table}" for table, rows in counts.items()))
    return EXIT_OK


def cmd_report_model(args: Args) -> int:
    from analysis.reports.generate import render_model_report

    started = time.perf_counter()
    return _report_done(render_model_report(args.store, args.model, args.run, args.out, timeout=args.timeout),
                        started)


def cmd_report_fleet(args: Args) -> int:
    from analysis.reports.generate import render_fleet_report

    started = time.perf_counter()
    return _report_done(render_fleet_report(args.store, args.run, args.compare, args.out, timeout=args.timeout),
                        started)


def _report_done(files: Any, started: float) -> int:
    for path in (files.html, files.markdown, files.notebook):
        if path is not None:
            print(path)
    print(f"report written in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return EXIT_OK


# --------------------------------------------------------------------------- click: flags -> one call each

_D = ScanConfig()  # the single source of every scan default: the flags show and use these
_STORE_HELP = ("the store: an SQLite file, or postgresql://user@host/db (default: RCA_STORE, else rca.sqlite in "
               "the data dir)")
_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def _checked(name: str, convert: Callable[[str], Any]) -> click.ParamType:
    """A click type from a converter that raises ``ValueError`` with the message the user sees."""

    class _Type(click.ParamType):
        def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
            if not isinstance(value, str):
                return value
            try:
                return convert(value)
            except ValueError as exc:
                self.fail(str(exc), param, ctx)

    _Type.name = name
    return _Type()


def _to_finite_float(text: str) -> float:
    """A finite, non-negative number (``inf`` would wait forever, ``nan`` would remove every cap)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"must be a finite number >= 0, got {text!r}")
    return value


def _to_port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise ValueError(f"a port is 0 to 65535 (0 picks a free one), got {value}")
    return value


def _to_duration(text: str) -> float:
    """``--max-age`` values: ``90s``, ``30m``, ``24h``, ``7d`` or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 24h, 7d)") from None
    if not (value >= 0 and value != float("inf")):
        raise ValueError(f"not a duration: {text!r} (a finite, non-negative amount)")
    return value


def _to_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise ValueError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


FINITE = _checked("NUMBER", _to_finite_float)
PORT = _checked("PORT", _to_port)
DURATION = _checked("AGE", _to_duration)
SECONDS = _checked("SECONDS", _to_seconds)


def _call(command: Callable[[Args], int], **params: Any) -> int:
    """Run one command function with the flags as attributes; a missing ``--store`` is the default store."""
    args = Args(**params)
    if "store" in params and params["store"] is None:
        args.store = config.store_location()
    try:
        return command(args)
    except BrokenPipeError:
        # The reader went away (`| head`): nothing wrong.  Caught here because click's main turns it into exit 1;
        # stdout goes to /dev/null so the interpreter's last flush does not raise again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            pass  # not a real file descriptor (tests capture output in memory)
        return EXIT_OK


def _shown(location: str) -> str:
    """A store location as it may be printed: a URL's password removed, safe to quote in a command line."""
    import shlex

    from analysis.store import display_location

    return shlex.quote(display_location(location))


class _Cli(click.Group):
    """The command group, whose ``main`` returns (or, standalone, exits with) our exit codes."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if prog_name is None:
            prog_name = "catalog-rca" if Path(sys.argv[0]).name == "catalog-rca" else "python -m analysis"
        code = _exit_code(lambda: super(_Cli, self).main(args=args, prog_name=prog_name, complete_var=complete_var,
                                                         standalone_mode=False, **extra))
        if standalone_mode:
            sys.exit(code)
        return code


def _store_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--store", help=_STORE_HELP)(func)


@click.group(cls=_Cli, context_settings=_CONTEXT,
             epilog="Exit codes: 0 ok, 1 --fail-on condition, 2 bad usage or input, 3 run-level failure (token, "
                    "credits, endpoint, account, budget), 4 internal error, 130 interrupted. The token is read from "
                    "HF_TOKEN only.")
@click.version_option(__version__, "--version", prog_name="python -m analysis", message="%(prog)s %(version)s")
@click.option("--data-dir", metavar="DIR", help="where the default store (rca.sqlite) and the sample (sample.sqlite) "
                                                "live (default: RCA_HOME, else ./data)")
def cli(data_dir: str | None) -> None:
    """Catalog RCA Explorer: probe every model a provider lists, explain each failure, export a blocklist."""
    config.set_data_dir(data_dir)


@cli.command(context_settings=_CONTEXT)
@click.option("--hub-url", default=_D.hub_url, show_default=True, help="Hub API base URL")
@click.option("--router-url", default=_D.router_url, show_default=True,
              help="OpenAI-compatible router base URL (.../v1)")
@click.option("--provider", default=_D.provider, show_default=True,
              help="inference provider: a name (model string id:provider), a comma list, or 'all' ('all,-novita' "
                   "leaves one out)")
@_store_option
@click.option("--concurrency", type=int, default=_D.concurrency,
              help="requests in flight at most, over every provider (default: 8 per provider in scope, at most 256); "
                   "under it each provider gets its own limit, adapted to its answers")
@click.option("--rate", multiple=True, metavar="PROVIDER=N",
              help="pin a provider's requests per second instead of adapting it (repeatable; 'bare=N' for bare ids)")
@click.option("--timeout", type=FINITE, default=_D.timeout, show_default=True, help="seconds per request")
@click.option("--retries", type=int, default=_D.retries, show_default=True,
              help="retries on 408, 424, 429, 5xx, timeouts, connection errors")
@click.option("--max-tokens", type=int, default=_D.max_tokens, show_default=True,
              help="max_tokens of the probe (a refusal of it is re-probed with --max-tokens-retry)")
@click.option("--max-tokens-retry", type=int, default=_D.max_tokens_retry, show_default=True, metavar="N",
              help="budget of the one re-probe of a model that refused our budget (sent streamed and closed at the "
                   "first chunk, so it costs almost nothing)")
@click.option("--backoff", type=FINITE, default=_D.backoff, show_default=True,
              help="base seconds of exponential backoff")
@click.option("--retry-after-cap", type=FINITE, default=_D.retry_after_cap, show_default=True,
              help="never wait longer than this for a Retry-After")
@click.option("--hub-limit", type=int, default=_D.hub_limit, show_default=True,
              help="page size asked of the Hub (it may cap it)")
@click.option("--batch-size", type=int, default=_D.batch_size, show_default=True,
              help="probe results committed per transaction")
@click.option("--source", type=click.Choice(list(SOURCES)), default=_D.source, show_default=True,
              help="catalog: the Hub API, the router's /models (HF shape), any OpenAI-compatible /models (bare ids), "
                   "or --catalog-file")
@click.option("--catalog-file", metavar="PATH", help="with --source file: a JSON or CSV list of model ids")
@click.option("--route", type=click.Choice(["auto", "suffix", "bare"]), default=_D.route, show_default=True,
              help="model string sent: id:provider (suffix), or the bare id (the router or gateway chooses the "
                   "provider); auto: suffix for --source hub/router, bare for file/openai")
@click.option("--route-checks", type=int, default=_D.route_checks, show_default=True, metavar="N",
              help="for a refused model, try up to N other routes (bare id, other live providers)")
@click.option("--canary", multiple=True, metavar="ID[:PROVIDER]",
              help="known-good model probed first, for every provider in scope or for the one named (repeatable; "
                   "default per provider: the 3 most-downloaded models mapped live and listed by the router)")
@click.option("--no-probe", is_flag=True,
              help="metadata only: predict verdicts from the catalog and router list; zero chat calls, nothing "
                   "blocked")
@click.option("--persistent-after", type=int, default=_D.persistent_after, show_default=True, metavar="N",
              help="a transient failure blocks (persistent_failure) after N consecutive failing runs...")
@click.option("--persistent-min-hours", type=FINITE, default=_D.persistent_min_hours, show_default=True,
              metavar="H", help="...spanning at least H hours")
@click.option("--fail-on", type=click.Choice(["new-blocked"]),
              help="exit 1 when this run blocks a model the previous successful run of the same source and provider "
                   "did not (a first run compares against an empty blocklist)")
@click.option("--resume", is_flag=False, flag_value="latest", default=None, metavar="[RUN_ID]",
              help="finish an incomplete run (Ctrl-C, killed, out of budget), probing only targets without a result; "
                   "without RUN_ID: the newest incomplete run")
@click.option("--notify", multiple=True, metavar="URL",
              help="after the run, post one JSON message (a Slack/Mattermost 'text' field) of what changed: a new "
                   "run-level failure, newly blocked, recovered, new fixes (repeatable; also RCA_NOTIFY_URLS). The "
                   "URLs are secrets: never stored or shown")
@click.option("--notify-always", is_flag=True, help="notify even when nothing changed")
@click.option("--app-url", metavar="URL", help="the dashboard's base URL, for links in notifications")
@click.option("--plan", is_flag=True,
              help="send no chat request: print the targets, the requests expected, the estimated cost (from the "
                   "router's USD-per-million-token pricing) and duration; creates no run, needs no token")
@click.option("--format", "format_", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="with --plan: the output format")
@click.option("--budget-usd", type=FINITE, metavar="USD",
              help="stop cleanly, before the estimated spend of this invocation could pass USD (only answers are "
                   "billed; each at its prompt plus --max-tokens at the router's price): exit 3, the run incomplete, "
                   "the resume command printed; with --resume it replaces the run's budget")
@click.option("--changed-only", is_flag=True,
              help="probe only targets whose catalog entry changed since the last successful run (lastModified, "
                   "mapping status, router listing), that were transient, or whose evidence is older than "
                   "--max-age; carry the other verdicts forward (marked carried). Canaries are always probed")
@click.option("--max-age", type=DURATION, metavar="AGE",
              help="with --changed-only: evidence older than AGE is probed again (default 24h; e.g. 6h, 7d)")
@click.option("--wait", type=FINITE, default=0.0, show_default=True, metavar="SECONDS",
              help="when a scan of an overlapping scope (same source, overlapping providers; 'all' overlaps every "
                   "one) holds the store's lease, wait up to SECONDS for it instead of exiting 3 at once")
@click.option("-q", "--quiet", is_flag=True, help="no progress output")
def scan(**params: Any) -> int:
    """Scan a provider's catalog and store the run.

    Read the provider's slice of the Hub catalog and the router's model list, send every model one minimal chat
    completion, and store one verdict per model. HF_TOKEN is sent to both endpoints when set.
    """
    ctx = click.get_current_context()
    params["format"] = params.pop("format_")
    params["ignored_with_resume"] = [
        param.opts[0] for param in ctx.command.params
        if param.name is not None and param.name in ctx.params and param.name not in _RESUME_FLAGS
        and ctx.get_parameter_source(param.name) is not click.core.ParameterSource.DEFAULT]
    return _call(cmd_scan, **params)


# What a resume takes; every other scan flag is the run's own setting (a warning says so).
_RESUME_FLAGS = ("resume", "store", "quiet", "notify", "notify_always", "app_url", "budget_usd", "wait")


@cli.command(context_settings=_CONTEXT)
@click.argument("what", type=click.Choice(["findings", "blocklist", "routes"]), metavar="WHAT")
@_store_option
@click.option("--run", help="run id (default: the latest successful run; for a blocklist, the latest successful "
                            "probing run)")
@click.option("--format", "format_", type=click.Choice(["csv", "json", "python"]), default="csv", show_default=True,
              help="csv (formula cells neutralised), json, or a Python set UNSUPPORTED_MODELS")
@click.option("--out", help="output file (default: stdout)")
@click.option("--reasons", help="blocklist: comma list of reasons to block instead of the default policy (run-level "
                                "reasons are refused)")
@click.option("--max-age", type=DURATION, metavar="AGE",
              help="blocklist: exit 3 and write nothing when the run finished longer ago than AGE (e.g. 24h, 30m, 7d)")
def export(format_: str, **params: Any) -> int:
    """Export findings, the blocklist or the route and request fixes.

    WHAT is findings (every finding of the run), blocklist (only the blocked ones) or routes (the fixes of our own
    faults: broken route -> working route, and the request settings that work). The default run is the latest
    successful one. A blocklist (and the fixes) come only from a successful probing run: when there is none, or
    --run names a failed, incomplete or predicted run, it exits 3 and writes nothing (a successful run that blocks
    nothing gives a header-only file). Every file says which run it comes from (provenance). Use --out, not '>':
    it replaces the file atomically and only on success.
    """
    return _call(cmd_export, format=format_, **params)


@cli.command(context_settings=_CONTEXT)
@click.argument("action", type=click.Choice(["add", "list", "remove"]), metavar="ACTION")
@click.argument("target", required=False, default="", metavar="[MODEL[:PROVIDER]|ID]")
@click.option("--allow", is_flag=True, help="never block it")
@click.option("--block", is_flag=True, help="always block it")
@click.option("--reason", default="", metavar="TEXT", help="why (required with add)")
@click.option("--expires", metavar="DATE", help="when it stops applying (ISO date or time, UTC)")
@_store_option
def override(**params: Any) -> int:
    """Allow or block a model by hand.

    ACTION is add MODEL[:PROVIDER] (every provider, or the one named), list, or remove ID. An operator's override
    of the blocklist is stored with who and when, and applied by every export, the dashboard and the reports:
    --allow keeps a model off the blocklist, --block puts it on. An expired override stops applying and the
    exports say so.
    """
    return _call(cmd_override, **params)


@cli.command(context_settings=_CONTEXT)
@_store_option
@click.option("--from", "from_", metavar="RUN",
              help="older run (default: the successful run before --to in the same scope)")
@click.option("--to", metavar="RUN", help="newer run (default: the latest successful probing run)")
@click.option("--format", "format_", type=click.Choice(["text", "json", "csv"]), default="text", show_default=True,
              help="output format")
def diff(format_: str, **params: Any) -> int:
    """What changed between two runs: models newly blocked, recovered and with a changed reason."""
    return _call(cmd_diff, format=format_, **params)


@cli.command(context_settings=_CONTEXT)
@_store_option
@click.option("--keep", type=int, required=True, metavar="N", help="how many of the newest runs to keep")
@click.option("--vacuum", is_flag=True, help="compact the store afterwards")
def prune(**params: Any) -> int:
    """Delete every run but the N newest, with their catalog snapshots, probes and findings."""
    return _call(cmd_prune, **params)


@cli.command(context_settings=_CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=PORT, default=8765, show_default=True, help="0 picks a free port")
@click.option("--scenario", help="scenario JSON file (default: the built-in scenario)")
@click.option("--write-scenario", metavar="PATH", help="write the scenario as JSON and exit")
@click.option("--latency-scale", type=FINITE, help="multiply every simulated latency")
@click.option("--page-cap", type=int, help="largest Hub page the simulator serves")
@click.option("--synthetic", type=int, metavar="N", help="serve N healthy models instead (benchmarks)")
@click.option("--latency-ms", type=FINITE, help="with --synthetic: latency of every answer")
@click.option("--require-token", is_flag=True, help="accept only the token in HF_TOKEN")
def simulate(**params: Any) -> int:
    """Serve the offline Hub + router simulator on loopback, a local stand-in for the Hub API and the HF router."""
    return _call(cmd_simulate, **params)


@cli.command(context_settings=_CONTEXT)
@click.option("--out-dir", help="where to write the sample files (default: the data dir)")
@click.option("-v", "--verbose", is_flag=True, help="show probe progress")
def demo(**params: Any) -> int:
    """Build the offline sample store and blocklist.

    Start the simulator, scan it (a retired endpoint, bare ids, every provider in two phases, then an account with
    every provider switched off) and write sample.sqlite and sample-blocklist.csv into the data dir (data/ by
    default).
    """
    return _call(cmd_demo, **params)


@cli.group("store", context_settings=_CONTEXT)
def store_group() -> None:
    """Store maintenance: move a whole store between SQLite and PostgreSQL."""


@store_group.command("copy", context_settings=_CONTEXT)
@click.option("--from", "source", required=True, metavar="STORE", help="the store to copy (a file or a URL)")
@click.option("--to", "target", required=True, metavar="STORE",
              help="where to copy it (a file or postgresql://...); must be empty")
def store_copy(**params: Any) -> int:
    """Copy every run (catalog snapshots, targets, probes, findings, overrides) with its id into an empty store;
    a target that already holds runs is refused (exit 2)."""
    return _call(cmd_store_copy, **params)


@cli.group(context_settings=_CONTEXT)
def report() -> None:
    """Write an RCA report (notebook, HTML, Markdown).

    Execute a parameterised RCA notebook with papermill on this interpreter and write the executed notebook and a
    self-contained HTML page (and, for a model, a Markdown rendering). Reports read the store only; no token is
    needed or passed on.
    """


def _report_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        click.option("--store", help=_STORE_HELP + "; reports never fall back to the sample: pass --store "
                                                   "data/sample.sqlite after demo"),
        click.option("--run", help="run id (default: the latest successful run)"),
        click.option("--out", help="folder to write the report files into (default: reports/ in the data dir's "
                                   "parent, or $RCA_HOME/reports)"),
        click.option("--timeout", type=SECONDS, default=600, show_default=True,
                     help="seconds a notebook cell may run"),
    ]):
        func = option(func)
    return func


@report.command("model", context_settings=_CONTEXT)
@click.option("--model", required=True, help="model id, e.g. katanemo/Arch-Router-1.5B")
@_report_options
def report_model(**params: Any) -> int:
    """Root cause of one model's verdict: summary, evidence (catalog entry, router list, every probe attempt,
    history), why, recommendations and conclusion. Writes model_rca-<id>.ipynb, .html and .md."""
    return _call(cmd_report_model, **params)


@report.command("fleet", context_settings=_CONTEXT)
@click.option("--compare", help="run id to compare with (default: the previous successful run of the same scope)")
@_report_options
def report_fleet(**params: Any) -> int:
    """State of a whole run: totals per reason and pipeline tag with charts, most-failing authors, changes against
    a compared run, the blocklist and conflicting evidence. Writes catalog_rca-run<N>.ipynb and .html."""
    return _call(cmd_report_fleet, **params)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (``python -m analysis`` and the console script exit with it)."""
    return int(cli.main(args=list(argv) if argv is not None else None, standalone_mode=False))


# ScanConfig fields whose flag is not the field's name in kebab case.
_FLAG_OF_FIELD = {"max_age_s": "--max-age", "rate_pins": "--rate", "canaries": "--canary", "probe": "--no-probe"}


def flag_of(field: str) -> str:
    """The scan flag that sets ScanConfig's ``field``."""
    return _FLAG_OF_FIELD.get(field, "--" + field.replace("_", "-"))


def _exit_code(run: Callable[[], Any]) -> int:
    """Run the click group and map every way it ends to an exit code: click's usage errors to one line and 2,
    its Ctrl-C (``Abort``) to 130 rather than "Aborted!" and 1, our errors to theirs, anything else to 4."""
    try:
        return int(run() or 0)
    except click.exceptions.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help() if exc.ctx is not None else "", file=sys.stderr)
        return EXIT_USAGE
    except click.ClickException as exc:  # usage errors: one line, pointing at --help
        context = getattr(exc, "ctx", None)
        where = context.command_path if context is not None else "python -m analysis"
        _err(f"error: {' '.join(exc.format_message().split())} (see {where} --help)")
        return EXIT_USAGE
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        _err("interrupted")
        return 130
    except SettingError as exc:  # core errors name the setting; here it is the flag that sets it
        _err(f"error: {exc.worded(flag_of)}")
        return exc.exit_code
    except RcaError as exc:
        _err(f"error: {exc}")
        return exc.exit_code
    except BrokenPipeError:
        return EXIT_OK
    except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
        if isinstance(exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError)):
            return _internal_error(exc)  # our bug, not the store's
        # a corrupt row read lazily, past the store's own translation: the store is bad input
        _err(f"error: the store cannot be read: {exc}")
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - last line of defence: a scrubbed one-liner, not a traceback
        return _internal_error(exc)


def _internal_error(exc: BaseException) -> int:
    _err(f"internal error: {type(exc).__name__}: {exc}")
    if os.environ.get("RCA_DEBUG"):
        print(show_controls(scrub(traceback.format_exc(), _token())), file=sys.stderr)
    return EXIT_INTERNAL
