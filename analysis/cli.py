"""``python -m analysis``: the command line.  Each command calls one package function.

This module, ``app.py`` and :mod:`analysis.config` (the paths) are the only places
that read the environment; the token comes from ``HF_TOKEN`` and nowhere else.

Exit codes: 0 ok; 1 a ``--fail-on`` condition holds; 2 bad usage or input;
3 run-level failure (token, credits, endpoint, account settings, an outage; a
partial run; no run to publish a blocklist from); 4 internal error (a bug);
130 interrupted.
"""

from __future__ import annotations

import argparse
import math
import os
import sqlite3
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Sequence

from analysis import __version__, config
from analysis.config import SOURCES, ScanConfig
from analysis.errors import EXIT_OK, EXIT_USAGE, RcaError, UsageError, scrub
from analysis.pipeline.observer import ScanObserver
from analysis.taxonomy import BLOCKING, REASON_NAMES, RUN_LEVEL, TRANSIENT
from analysis.untrusted import show_controls, terminal_line

if TYPE_CHECKING:  # for annotations only: --help must not import pandas
    import pandas as pd

    from analysis.pipeline.scan import ScanOutcome
    from analysis.store import Store

__all__ = ["main", "build_parser"]

EXIT_INTERNAL = 4
_SCAN_DEFAULTS: dict[str, object] = {}  # filled by build_parser: what --resume ignores


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
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.bar = None

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(terminal_line(text), file=sys.stderr, flush=True)

    def run_started(self, run_id: int) -> None:
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
    if outcome.status in ("ok", "partial"):
        blocked = int(outcome.findings["blocked"].sum()) if len(outcome.findings) else 0
        transient = sum(v for k, v in outcome.counts.items() if k in TRANSIENT)
        lines.append(f"  blocked {blocked}, transient {transient}. Blocklist: python -m analysis export blocklist "
                     f"--store {store_path}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- commands


def cmd_scan(args: argparse.Namespace) -> int:
    from analysis.pipeline.scan import resume_scan, run_scan
    from analysis.store import open_store

    observer = CliObserver(args.quiet)
    scan_config = None
    if args.resume is None:
        scan_config = ScanConfig(hub_url=args.hub_url, router_url=args.router_url, provider=args.provider,
                            source=args.source, catalog_file=args.catalog_file, route=args.route,
                            concurrency=args.concurrency, timeout=args.timeout, retries=args.retries,
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
        ignored = [f"--{name.replace('_', '-')}" for name, default in _SCAN_DEFAULTS.items()
                   if name not in ("resume", "store", "quiet", "notify", "notify_always", "app_url", "budget_usd")
                   and getattr(args, name) != default]
        if ignored:
            _err(f"warning: ignored with --resume (the run keeps its own settings): {', '.join(ignored)}")
    with open_store(args.store, create=scan_config is not None) as store:  # a resume never creates a store
        if scan_config is None:
            run_id = None if args.resume == "latest" else _int(args.resume, "--resume")
            outcome = resume_scan(store, run_id, _token(), observer, budget_usd=args.budget_usd)
        else:
            outcome = run_scan(scan_config, store, observer)
    print(_summary(outcome, args.store))
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
        earlier = store.latest_run_id(None, source=run["source"], provider=run["provider"], before=run_id)
        judged = store.latest_run_id(SUCCESSFUL, source=run["source"], provider=run["provider"], before=run_id,
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


def _print_plan(scan_config: ScanConfig, args: argparse.Namespace, observer: ScanObserver) -> int:
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


def _resolve_run(store: Store, run: str | None, mode: str | None = None) -> tuple[int | None, dict | None]:
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


def cmd_export(args: argparse.Namespace) -> int:
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
                raise UsageError(f"no successful run in {args.store}; pass --run ID to export another run")
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


def cmd_override(args: argparse.Namespace) -> int:
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
                raise UsageError(f"no override {args.target} in {args.store}")
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


def _duration(text: str) -> float:
    """``--max-age`` values: ``90s``, ``30m``, ``24h``, ``7d`` or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 90s, 30m, 24h, 7d)") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (a finite, non-negative amount)")
    return value


def cmd_diff(args: argparse.Namespace) -> int:
    import json

    from analysis.outputs.export import csv_bytes
    from analysis.outputs.views import run_diff
    from analysis.store import open_store

    with open_store(args.store, readonly=True) as store:
        if args.to is None:
            to_run = store.latest_run_id(mode="probe")
            if to_run is None:
                raise UsageError(f"no successful probing run in {args.store}")
        else:
            to_run = _int(args.to, "--to")
            store.get_run(to_run)
        from_run = _int(args.from_, "--from") if args.from_ is not None else store.previous_ok_run(to_run)
        if from_run is None:
            raise UsageError(f"run {to_run} has no earlier successful run of the same scope; pass --from RUN")
        before, after = store.get_run(from_run), store.get_run(to_run)
        versions = (before["taxonomy_version"], after["taxonomy_version"])
        diff = run_diff(store, from_run, to_run)
    for run in (before, after):
        if run["status"] not in ("ok", "partial"):
            _err(f"warning: run {run['id']} is {run['status']}: it judged no model (or not all), so its side of "
                 "the comparison is not evidence")
    if (before["source"], before["provider"]) != (after["source"], after["provider"]):
        _err(f"warning: run {from_run} ({before['source']} {before['provider']}) and run {to_run} "
             f"({after['source']} {after['provider']}) scanned different scopes: targets outside both show as new")
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


def cmd_prune(args: argparse.Namespace) -> int:
    from analysis.store import open_store

    with open_store(args.store, create=False) as store:
        deleted = store.prune(args.keep)
        if deleted and args.vacuum:
            store.vacuum()
    print(f"deleted {len(deleted)} run(s)" + (f": {', '.join(map(str, deleted))}" if deleted else "")
          + f"; kept the {args.keep} newest")
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
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


def cmd_demo(args: argparse.Namespace) -> int:
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


# --------------------------------------------------------------------------- parser


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults, except the empty ones ("default: None" says nothing)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or isinstance(action, argparse._HelpAction):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, pointing at ``--help`` (exit 2), instead of argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {terminal_line(message)} (see {self.prog} --help)\n")


def _finite_float(text: str) -> float:
    """A finite, non-negative number (``inf`` would wait forever, ``nan`` would remove every cap)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535 (0 picks a free one), got {value}")
    return value


_STORE_HELP = "SQLite store file (default: rca.sqlite in the data dir)"
_D = ScanConfig()  # the single source of every scan default: the flags show and use these


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m analysis", formatter_class=_Formatter,
        description="Catalog RCA Explorer: probe every model a provider lists, explain each failure, "
                    "export a blocklist.",
        epilog="Exit codes: 0 ok, 1 --fail-on condition, 2 bad usage or input, 3 run-level failure "
               "(token, credits, endpoint), 4 internal error, 130 interrupted. The token is read from HF_TOKEN only.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="where the default store (rca.sqlite) and the sample (sample.sqlite) live "
                             "(default: RCA_HOME, else ./data)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    scan = sub.add_parser("scan", formatter_class=_Formatter, help="scan a provider's catalog and store the run",
                          description="Read the provider's slice of the Hub catalog and the router's model list, "
                                      "send every model one minimal chat completion, and store one verdict per "
                                      "model. HF_TOKEN is sent to both endpoints when set.")
    scan.add_argument("--hub-url", default=_D.hub_url, help="Hub API base URL")
    scan.add_argument("--router-url", default=_D.router_url, help="OpenAI-compatible router base URL (…/v1)")
    scan.add_argument("--provider", default=_D.provider,
                      help="inference provider: a name (model string id:provider), a comma list, or 'all' "
                           "('all,-novita' leaves one out)")
    scan.add_argument("--store", help=_STORE_HELP)
    scan.add_argument("--concurrency", type=int, default=_D.concurrency, help="probes in flight at most")
    scan.add_argument("--timeout", type=_finite_float, default=_D.timeout, help="seconds per request")
    scan.add_argument("--retries", type=int, default=_D.retries,
                      help="retries on 408, 424, 429, 5xx, timeouts, connection errors")
    scan.add_argument("--max-tokens", type=int, default=_D.max_tokens,
                      help="max_tokens of the probe (a refusal of it is re-probed with --max-tokens-retry)")
    scan.add_argument("--max-tokens-retry", type=int, default=_D.max_tokens_retry, metavar="N",
                      help="budget of the one re-probe of a model that refused our budget (sent streamed and closed "
                           "at the first chunk, so it costs almost nothing)")
    scan.add_argument("--backoff", type=_finite_float, default=_D.backoff, help="base seconds of exponential backoff")
    scan.add_argument("--retry-after-cap", type=_finite_float, default=_D.retry_after_cap,
                      help="never wait longer than this for a Retry-After")
    scan.add_argument("--hub-limit", type=int, default=_D.hub_limit, help="page size asked of the Hub (it may cap it)")
    scan.add_argument("--batch-size", type=int, default=_D.batch_size, help="probe results committed per transaction")
    scan.add_argument("--source", choices=list(SOURCES), default=_D.source,
                      help="catalog: the Hub API, the router's /models (HF shape), any OpenAI-compatible /models "
                           "(bare ids), or --catalog-file")
    scan.add_argument("--catalog-file", metavar="PATH", help="with --source file: a JSON or CSV list of model ids")
    scan.add_argument("--route", choices=["auto", "suffix", "bare"], default=_D.route,
                      help="model string sent: id:provider (suffix), or the bare id (the router or gateway chooses "
                           "the provider); auto: suffix for --source hub/router, bare for file/openai")
    scan.add_argument("--route-checks", type=int, default=_D.route_checks, metavar="N",
                      help="for a refused model, try up to N other routes (bare id, other live providers)")
    scan.add_argument("--canary", action="append", metavar="ID[:PROVIDER]",
                      help="known-good model probed first, for every provider in scope or for the one named "
                           "(repeatable; default per provider: the 3 most-downloaded models mapped live and listed "
                           "by the router)")
    scan.add_argument("--no-probe", action="store_true",
                      help="metadata only: predict verdicts from the catalog and router list; zero chat calls, "
                           "nothing blocked")
    scan.add_argument("--persistent-after", type=int, default=_D.persistent_after, metavar="N",
                      help="a transient failure blocks (persistent_failure) after N consecutive failing runs...")
    scan.add_argument("--persistent-min-hours", type=_finite_float, default=_D.persistent_min_hours, metavar="H",
                      help="...spanning at least H hours")
    scan.add_argument("--fail-on", choices=["new-blocked"],
                      help="exit 1 when this run blocks a model the previous successful run of the same source "
                           "and provider did not (a first run compares against an empty blocklist)")
    scan.add_argument("--resume", nargs="?", const="latest", metavar="RUN_ID",
                      help="finish an incomplete run (Ctrl-C, killed), probing only targets without a result; "
                           "default: the newest incomplete run")
    scan.add_argument("--notify", action="append", metavar="URL",
                      help="after the run, post one JSON message (a Slack/Mattermost 'text' field) of what changed: a "
                           "new run-level failure, newly blocked, recovered, new fixes (repeatable; also "
                           "RCA_NOTIFY_URLS). The URLs are secrets: never stored or shown")
    scan.add_argument("--notify-always", action="store_true", help="notify even when nothing changed")
    scan.add_argument("--app-url", metavar="URL", help="the dashboard's base URL, for links in notifications")
    scan.add_argument("--plan", action="store_true",
                      help="send no chat request: print the targets, the requests expected, the estimated cost (from "
                           "the router's USD-per-million-token pricing) and duration; creates no run, needs no token")
    scan.add_argument("--format", choices=["text", "json"], default="text", help="with --plan: the output format")
    scan.add_argument("--budget-usd", type=_finite_float, metavar="USD",
                      help="stop cleanly, before the estimated spend of this invocation could pass USD (only answers "
                           "are billed; each at its prompt plus --max-tokens at the router's price): exit 3, the run "
                           "incomplete, the resume command printed; with --resume it replaces the run's budget")
    scan.add_argument("--changed-only", action="store_true",
                      help="probe only targets whose catalog entry changed since the last successful run "
                           "(lastModified, mapping status, router listing), that were transient, or whose evidence "
                           "is older than --max-age; carry the other verdicts forward (marked carried). Canaries "
                           "are always probed")
    scan.add_argument("--max-age", type=_duration, metavar="AGE",
                      help="with --changed-only: evidence older than AGE is probed again (default 24h; e.g. 6h, 7d)")
    scan.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    scan.set_defaults(func=cmd_scan)
    _SCAN_DEFAULTS.update({a.dest: a.default for a in scan._actions if a.dest != "help"})

    export = sub.add_parser("export", formatter_class=_Formatter,
                            help="export findings, the blocklist or the route and request fixes",
                            description="Write a run's findings, its blocklist (blocked rows only), or its fixes "
                                        "(routes: the working route of each route_mismatch and the request settings "
                                        "of each probe_error). The default run is the latest successful one. A "
                                        "blocklist (and the fixes) come only from a successful "
                                        "probing run: when there is none, or --run names a failed, incomplete or "
                                        "predicted run, it exits 3 and writes nothing (a successful run that blocks "
                                        "nothing gives a header-only file). Use --out, not '>': it replaces the "
                                        "file atomically and only on success.")
    export.add_argument("what", choices=["findings", "blocklist", "routes"],
                        help="every finding of the run; only the blocked ones; or the fixes of our own faults "
                             "(broken route -> working route, and the request settings that work)")
    export.add_argument("--store", help=_STORE_HELP)
    export.add_argument("--run", help="run id (default: the latest successful run; for a blocklist, the latest "
                                      "successful probing run)")
    export.add_argument("--format", choices=["csv", "json", "python"], default="csv",
                        help="csv (formula cells neutralised), json, or a Python set UNSUPPORTED_MODELS")
    export.add_argument("--out", help="output file (default: stdout)")
    export.add_argument("--reasons", help="blocklist: comma list of reasons to block instead of the default policy "
                                          "(run-level reasons are refused)")
    export.add_argument("--max-age", type=_duration, metavar="AGE",
                        help="blocklist: exit 3 and write nothing when the run finished longer ago than AGE "
                             "(e.g. 24h, 30m, 7d)")
    export.set_defaults(func=cmd_export)

    override = sub.add_parser("override", formatter_class=_Formatter, help="allow or block a model by hand",
                              description="An operator's override of the blocklist, stored with who and when, and "
                                          "applied by every export, the dashboard and the reports: --allow keeps a "
                                          "model off the blocklist, --block puts it on. An expired override stops "
                                          "applying and the exports say so.")
    override.add_argument("action", choices=["add", "list", "remove"], help="add MODEL[:PROVIDER], list, or remove ID")
    override.add_argument("target", nargs="?", default="", metavar="MODEL[:PROVIDER]|ID",
                          help="add: the model (every provider, or the one named); remove: the override's id")
    decision = override.add_mutually_exclusive_group()
    decision.add_argument("--allow", action="store_true", help="never block it")
    decision.add_argument("--block", action="store_true", help="always block it")
    override.add_argument("--reason", default="", metavar="TEXT", help="why (required with add)")
    override.add_argument("--expires", metavar="DATE", help="when it stops applying (ISO date or time, UTC)")
    override.add_argument("--store", help=_STORE_HELP)
    override.set_defaults(func=cmd_override)

    diff = sub.add_parser("diff", formatter_class=_Formatter, help="what changed between two runs",
                          description="List models newly blocked, recovered (failing before, ok now) and with a "
                                      "changed reason between two runs.")
    diff.add_argument("--store", help=_STORE_HELP)
    diff.add_argument("--from", dest="from_", metavar="RUN",
                      help="older run (default: the successful run before --to in the same scope)")
    diff.add_argument("--to", metavar="RUN", help="newer run (default: the latest successful probing run)")
    diff.add_argument("--format", choices=["text", "json", "csv"], default="text", help="output format")
    diff.set_defaults(func=cmd_diff)

    prune = sub.add_parser("prune", formatter_class=_Formatter, help="delete old runs",
                           description="Delete every run but the N newest, with their catalog snapshots, probes "
                                       "and findings.")
    prune.add_argument("--store", help=_STORE_HELP)
    prune.add_argument("--keep", type=int, required=True, metavar="N", help="how many of the newest runs to keep")
    prune.add_argument("--vacuum", action="store_true", help="compact the file afterwards")
    prune.set_defaults(func=cmd_prune)

    sim = sub.add_parser("simulate", formatter_class=_Formatter, help="serve the offline Hub + router simulator",
                         description="Serve a local stand-in for the Hub API and the HF router on loopback.")
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sim.add_argument("--port", type=_port, default=8765, help="0 picks a free port")
    sim.add_argument("--scenario", help="scenario JSON file (default: the built-in scenario)")
    sim.add_argument("--write-scenario", metavar="PATH", help="write the scenario as JSON and exit")
    sim.add_argument("--latency-scale", type=_finite_float, help="multiply every simulated latency")
    sim.add_argument("--page-cap", type=int, help="largest Hub page the simulator serves")
    sim.add_argument("--synthetic", type=int, metavar="N", help="serve N healthy models instead (benchmarks)")
    sim.add_argument("--latency-ms", type=_finite_float, help="with --synthetic: latency of every answer")
    sim.add_argument("--require-token", action="store_true", help="accept only the token in HF_TOKEN")
    sim.set_defaults(func=cmd_simulate)

    demo = sub.add_parser("demo", formatter_class=_Formatter, help="build the offline sample store and blocklist",
                          description="Start the simulator, scan it (a retired endpoint, bare ids, every provider in "
                                      "two phases, then an account with every provider switched off) and write "
                                      "sample.sqlite and sample-blocklist.csv into the data dir (data/ by default).")
    demo.add_argument("--out-dir", help="where to write the sample files (default: the data dir)")
    demo.add_argument("-v", "--verbose", action="store_true", help="show probe progress")
    demo.set_defaults(func=cmd_demo)

    from analysis.reports.generate import add_report_parser

    add_report_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config.set_data_dir(args.data_dir)
    if hasattr(args, "store") and args.store is None:
        args.store = str(config.default_store())
    try:
        return int(args.func(args))
    except RcaError as exc:
        _err(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
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
