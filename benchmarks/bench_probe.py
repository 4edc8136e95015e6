"""Probe throughput: a real scan against a minimal raw-asyncio prober, the latency-bound ideal and one-at-a-time.

6,000 healthy models answer after 50 ms each, from the simulator running in its
own process; the scan probes them 64 at a time.  In one run, with the rounds
interleaved so that a noisy neighbour hits every contender alike:

- ``run_scan``: the whole scan as a library call in this process
  (:func:`analysis.scan.run_scan`: catalog, router list, canaries, probes, route
  checks, diagnosis, history, store), timed like the reference: the headline;
- ``scan``: ``python -m analysis scan ... --concurrency 64`` as a subprocess (wall
  time, so it also pays interpreter start, imports and exit), split into phases
  with the timestamps the scan stores;
- ``probe_targets``: :func:`analysis.probe.probe_targets` in this process, on the
  same targets (the probing alone, without catalog, store or diagnosis);
- ``reference``: 64 raw ``asyncio.open_connection`` keep-alive sockets sending
  hand-written HTTP/1.1 POSTs, the floor for Python on this machine;
- the transport contenders (issue 10, item 9): the whole in-process scan
  again, with the probe layer's clients swapped for
  ``httpx-per-worker`` (httpx's default transport, one ``AsyncClient`` per
  worker) and ``httpx-pooled`` (one pooled ``AsyncClient`` shared by all 64
  workers), so the transport is chosen by a figure measured in the same run;
- the ideal, 6000 x 0.05 s / 64, and a sequential baseline extrapolated from a
  sample of one-at-a-time requests.

Run alone: ``.venv/bin/python benchmarks/bench_probe.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sqlite3
import subprocess
import tempfile
import time
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

import _common as c
import httpx

from analysis.pipeline import probe as probe_module
from analysis.pipeline.catalog import fetch_hub_models, normalise_hub_models
from analysis.pipeline.probe import ProbeSettings, probe_targets
from analysis.pipeline.scan import ScanConfig
from analysis.pipeline.scan import run_scan as scan_in_process
from analysis.pipeline.targets import build_targets
from analysis.store import open_store

PROVIDER = "hf-inference"
LATENCY_MS = 50.0
CONCURRENCY = 64
TARGET_RATIO = 1.25
# The same request body as analysis.probe sends, so both sides parse the same bytes.
PROMPT = "Reply with the single word OK."


def settings(quick: bool) -> dict[str, int]:
    if quick:
        return {"models": 1200, "rounds": 1, "sequential": 40, "warmup": 128}
    # Three rounds: the machine is shared and noisy, and a median of three shrugs off a bad run; the
    # pooled-httpx contender alone takes about a minute a round, so five rounds would not fit run_all's limit.
    return {"models": 6000, "rounds": 3, "sequential": 200, "warmup": 512}


# --------------------------------------------------------------------------- the contenders


def _headers(probe_settings: ProbeSettings) -> dict[str, str]:
    headers = {"User-Agent": "bench", "Content-Type": "application/json"}
    if probe_settings.token:
        headers["Authorization"] = f"Bearer {probe_settings.token}"
    return headers


def _httpx_per_worker(probe_settings: ProbeSettings) -> list[httpx.AsyncClient]:
    """httpx's default transport, one ``AsyncClient`` (and so one small pool) per worker."""
    return [httpx.AsyncClient(headers=_headers(probe_settings), timeout=httpx.Timeout(probe_settings.timeout),
                              follow_redirects=False) for _ in range(max(1, probe_settings.concurrency))]


def _httpx_pooled(probe_settings: ProbeSettings) -> list[httpx.AsyncClient]:
    """One ``AsyncClient`` whose pool holds a connection per worker, shared by all workers."""
    width = max(1, probe_settings.concurrency)
    limits = httpx.Limits(max_connections=width, max_keepalive_connections=width)
    return [httpx.AsyncClient(headers=_headers(probe_settings), timeout=httpx.Timeout(probe_settings.timeout),
                              limits=limits, follow_redirects=False)]


# The probe layer's client factory, swapped for a contender while it runs (the probe code itself is unchanged).
CLIENT_LAYOUTS: dict[str, Callable[[ProbeSettings], list[httpx.AsyncClient]] | None] = {
    "": None,  # the probe layer's own clients
    "httpx-per-worker": _httpx_per_worker,
    "httpx-pooled": _httpx_pooled,
}


@contextmanager
def client_layout(name: str) -> Iterator[None]:
    factory = CLIENT_LAYOUTS[name]
    if factory is None:
        yield
        return
    original = probe_module._clients
    probe_module._clients = factory  # type: ignore[assignment]
    try:
        yield
    finally:
        probe_module._clients = original


async def _reference(url: str, model_strings: list[str], concurrency: int) -> dict[int, int]:
    """Raw keep-alive sockets: no client library, no pool, no parsing beyond status and Content-Length."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    queue = list(reversed(model_strings))
    statuses: dict[int, int] = {}

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while queue:
                body = json.dumps({"model": queue.pop(), "messages": [{"role": "user", "content": PROMPT}],
                                   "max_tokens": 16, "stream": False}).encode()
                writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s:%d\r\n"
                             b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (host.encode(), port, len(body), body))
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                status = int(head.split(b" ", 2)[1])
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def run_reference(sim: c.Simulator, model_strings: list[str]) -> dict:
    cpu = time.process_time()
    with c.stopwatch() as t:
        statuses = asyncio.run(_reference(sim.url, model_strings, CONCURRENCY))
    return {"s": t["s"], "cpu_s": time.process_time() - cpu, "note": f"statuses {statuses}"}


def run_probe_targets(sim: c.Simulator, targets: list, layout: str = "") -> dict:
    probe_settings = ProbeSettings(router_url=sim.router_url, concurrency=CONCURRENCY)
    cpu = time.process_time()
    with client_layout(layout), c.stopwatch() as t:
        results = asyncio.run(probe_targets(targets, probe_settings))
    outcomes: dict[str, int] = {}
    for r in results:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    return {"s": t["s"], "cpu_s": time.process_time() - cpu, "note": f"outcomes {outcomes}"}


def run_library_scan(sim: c.Simulator, workdir: Path, n: int, layout: str = "") -> dict:
    """The full scan in this process, on a fresh store, with the CLI's defaults but the concurrency."""
    config = ScanConfig(hub_url=sim.url, router_url=sim.router_url, provider=PROVIDER, concurrency=CONCURRENCY)
    store_path = workdir / f"lib-{time.monotonic_ns()}.sqlite"
    cpu = time.process_time()
    with client_layout(layout), c.stopwatch() as t, open_store(store_path) as store:
        outcome = scan_in_process(config, store)
    if outcome.status != "ok" or sum(outcome.counts.values()) != n:
        raise RuntimeError(f"run_scan: {outcome.status} with {outcome.counts}")
    return {"s": t["s"], "cpu_s": time.process_time() - cpu, "note": f"reasons {outcome.counts}"}


def _iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run_scan(sim: c.Simulator, workdir: Path, n: int) -> dict:
    """The CLI scan as a subprocess; its store's timestamps split the wall time into phases."""
    store_path = workdir / f"scan-{time.monotonic_ns()}.sqlite"
    cmd = [c.PYTHON, "-m", "analysis", "scan", "--hub-url", sim.url, "--router-url", sim.router_url,
           "--provider", PROVIDER, "--concurrency", str(CONCURRENCY), "--store", str(store_path), "-q"]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    spawned = time.time()
    with c.stopwatch() as t:
        proc = subprocess.run(cmd, cwd=c.ROOT, capture_output=True, text=True)
    exited = time.time()
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"scan exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    # Plain read-only SQL on columns of the first schema version: the bench may have imported an
    # older analysis.store than the one the scan subprocess just ran, and must not migrate its store.
    with closing(sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)) as db:
        run_id, status, run_started, run_finished = db.execute(
            "SELECT id, status, started_at, finished_at FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        first, last = db.execute("SELECT MIN(started_at), MAX(finished_at) FROM probes WHERE run_id = ?",
                                 (run_id,)).fetchone()
        reasons = dict(db.execute("SELECT reason, COUNT(*) FROM findings WHERE run_id = ? GROUP BY reason",
                                  (run_id,)).fetchall())
    first_probe, last_probe = _iso(first), _iso(last)
    started, finished = _iso(run_started), _iso(run_finished)
    if sum(reasons.values()) != n or status != "ok":
        raise RuntimeError(f"scan run {run_id} is {status} with {sum(reasons.values())} findings, expected {n}")
    return {
        "s": t["s"],
        "cpu_s": (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime),
        "phases": {
            "start-up (interpreter, imports, store open)": started - spawned,
            "catalog and targets (up to the first probe)": first_probe - started,
            "probing (first probe sent to last answer)": last_probe - first_probe,
            "after probing (diagnose, history, findings stored)": finished - last_probe,
            "exit (store closed, interpreter torn down)": exited - finished,
        },
        "note": f"reasons {reasons}",
    }


def run_sequential(sim: c.Simulator, model_strings: list[str]) -> list[float]:
    """One request at a time over one keep-alive client: how a simple health-check loop behaves."""
    latencies = []
    with httpx.Client(timeout=30) as client:
        for model in model_strings:
            payload = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16,
                       "stream": False}
            with c.stopwatch() as t:
                resp = client.post(f"{sim.router_url}/chat/completions", json=payload)
                resp.raise_for_status()
            latencies.append(t["s"])
    return latencies


# --------------------------------------------------------------------------- the run


def _served(sim: c.Simulator, n: int, expected: list[str]) -> dict:
    """What the simulator saw: every model once, and how many were in flight at the peak."""
    stats = sim.stats()
    attempts = stats["attempts"]
    once = sum(1 for m in expected if attempts.get(m) == 1)
    return {"chat_requests": stats["chat_requests"], "peak": stats["peak_in_flight"], "once": once, "n": n}


def main() -> None:
    args = c.parse_args(__doc__)
    cfg = settings(args.quick)
    n = cfg["models"]
    ideal = n * LATENCY_MS / 1000 / CONCURRENCY
    c.log(f"bench_probe: {n} models at {LATENCY_MS:g} ms, concurrency {CONCURRENCY}, {cfg['rounds']} rounds")
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp, \
            c.simulator("--synthetic", str(n), "--latency-ms", f"{LATENCY_MS:g}") as sim:
        # The scan's own targets, read the way the scan reads them.
        catalog = normalise_hub_models(fetch_hub_models(sim.url, PROVIDER))
        targets = build_targets(catalog, [PROVIDER])
        model_strings = [t.model_string for t in targets]
        assert len(targets) == n, f"simulator served {len(targets)} targets, expected {n}"
        # Warm both processes' code paths and the simulator's sockets; not reported.
        asyncio.run(_reference(sim.url, model_strings[: cfg["warmup"]], CONCURRENCY))
        contenders = {
            "reference": lambda: run_reference(sim, model_strings),
            "probe_targets": lambda: run_probe_targets(sim, targets),
            "run_scan": lambda: run_library_scan(sim, Path(tmp), n),
            "scan": lambda: run_scan(sim, Path(tmp), n),
        }
        for layout in CLIENT_LAYOUTS:
            if layout:
                contenders[f"run_scan {layout}"] = (lambda lay=layout: run_library_scan(sim, Path(tmp), n, lay))
        runs = c.interleave(sim, contenders, cfg["rounds"], lambda s: _served(s, n, model_strings))
        sim.reset()
        sample = model_strings[: cfg["sequential"]]
        c.log(f"  sequential sample: {len(sample)} requests, one at a time")
        sequential = run_sequential(sim, sample)
        seq_served = _served(sim, len(sample), sample)
    print(report(cfg, ideal, runs, sequential, seq_served))


# --------------------------------------------------------------------------- the report


def report(cfg: dict, ideal: float, runs: dict[str, list[dict]], sequential: list[float], seq_served: dict) -> str:
    n = cfg["models"]
    times = {name: [r["s"] for r in rs] for name, rs in runs.items()}
    probing = [r["phases"]["probing (first probe sent to last answer)"] for r in runs["scan"]]
    ref = c.median(times["reference"])
    seq_total = sum(sequential) / len(sequential) * n
    wall_ratio = c.median(times["run_scan"]) / ref
    cli_ratio = c.median(times["scan"]) / ref
    probe_ratio = c.median(probing) / ref

    def row(label: str, values: list[float], how: str) -> list[str]:
        med = c.median(values)
        return [label, c.fmt_runs(values), f"{n / med:,.0f}", f"{med / ref:.2f}x", f"{med / ideal:.2f}x", how]

    rows = [
        ["latency-bound ideal", f"{ideal:.2f} s", f"{n / ideal:,.0f}", f"{ideal / ref:.2f}x", "1.00x",
         f"{n} x {LATENCY_MS / 1000:g} s / {CONCURRENCY}"],
        row("reference prober", times["reference"], f"{CONCURRENCY} raw asyncio keep-alive sockets, in-process"),
        row("`probe_targets`", times["probe_targets"], "analysis.probe, in-process, same targets"),
        row("**scan** (`run_scan`)", times["run_scan"], "the whole scan in-process: catalog, canaries, probes, "
            "route checks, diagnosis, history, store"),
        row("scan: probing phase", probing, "first probe sent to last answer, from the CLI scan's store"),
        row("`python -m analysis scan`", times["scan"], "CLI subprocess, wall time: also interpreter start, "
            "imports and exit"),
        ["sequential (extrapolated)", f"{seq_total:.1f} s", f"{n / seq_total:,.0f}", f"{seq_total / ref:.1f}x",
         f"{seq_total / ideal:.1f}x",
         f"mean of {len(sequential)} one-at-a-time requests ({c.median(sequential) * 1000:.1f} ms median) x {n}"],
    ]
    phase_names = list(runs["scan"][0]["phases"])
    phase_rows = [[name, c.fmt_runs([r["phases"][name] for r in runs["scan"]])] for name in phase_names]
    cpu_rows = [[name, c.fmt_runs([r["cpu_s"] for r in rs]), c.fmt_runs([r["sim_cpu_s"] for r in rs])]
                for name, rs in runs.items()]
    served_rows = []
    for name, rs in runs.items():
        for i, r in enumerate(rs, 1):
            s = r["served"]
            served_rows.append([f"{name} #{i}", s["chat_requests"], f"{s['once']}/{s['n']}", s["peak"], r["note"]])
    served_rows.append(["sequential sample", seq_served["chat_requests"], f"{seq_served['once']}/{seq_served['n']}",
                        seq_served["peak"], ""])
    met = wall_ratio <= TARGET_RATIO
    return "\n\n".join([
        "## Probe throughput",
        c.summary(f"Probe {n:,} models: scan {c.median(times['run_scan']):.2f} s = {wall_ratio:.2f}x the "
                  f"reference prober's {ref:.2f}s (target <= {TARGET_RATIO}x: {c.verdict(met)}); CLI subprocess "
                  f"{cli_ratio:.2f}x; probing phase {probe_ratio:.2f}x; ideal {ideal:.2f} s; "
                  f"sequential ~{seq_total:.0f} s"),
        f"{n:,} healthy models, {LATENCY_MS:g} ms simulated latency each, concurrency {CONCURRENCY}; the simulator "
        f"runs in its own process (`python -m analysis simulate --synthetic {n} --latency-ms {LATENCY_MS:g}`). "
        f"{cfg['rounds']} round(s), contenders interleaved (order rotated each round); medians, then every run in "
        "order. Ratios are against the reference prober measured in the same run.",
        c.md_table(["contender", "time", "req/s", "vs reference", "vs ideal", "how"], rows),
        f"**Target: the scan within {TARGET_RATIO}x of the reference: {wall_ratio:.2f}x, {c.verdict(met)}.** "
        "Both are timed in this process, so neither pays an interpreter start. The same scan as a CLI "
        f"subprocess, interpreter start, imports and exit included, is {cli_ratio:.2f}x; its probing phase alone "
        f"is {probe_ratio:.2f}x, and `probe_targets` in-process is "
        f"{c.median(times['probe_targets']) / ref:.2f}x.",
        "Where the scan's wall time goes (from the timestamps the scan writes to its store, against the "
        "subprocess's spawn and exit):",
        c.md_table(["scan phase", "time"], phase_rows),
        "CPU seconds per run (the client's own process; the simulator's process alongside):",
        c.md_table(["contender", "client CPU", "simulator CPU"], cpu_rows),
        "What the simulator served (`/_sim/stats`, reset before each run): chat requests, models asked exactly "
        "once, peak requests in flight.",
        c.md_table(["run", "chat requests", "each model once", "peak in flight", "result"], served_rows),
        f"The sequential figure is extrapolated: {len(sequential)} requests were sent one at a time over one "
        f"keep-alive `httpx.Client`, and their mean time is multiplied by {n:,}.",
        transport_section(runs, ref),
    ])


TRANSPORT_RATIO = 1.2


def transport_section(runs: dict[str, list[dict]], ref: float) -> str:
    """The transport contenders (issue 10, item 9): the same scan with the probe layer's clients swapped."""
    layouts = [("the probe layer's own clients", "")] + [(name, name) for name in CLIENT_LAYOUTS if name]
    rows = []
    for label, layout in layouts:
        scan_runs = runs["run_scan" + (f" {layout}" if layout else "")]
        scan_s = c.median([r["s"] for r in scan_runs])
        rows.append([label, c.fmt_runs([r["s"] for r in scan_runs]), f"{scan_s / ref:.2f}x",
                     c.fmt_runs([r["cpu_s"] for r in scan_runs])])
    per_worker = c.median([r["s"] for r in runs["run_scan httpx-per-worker"]]) / ref
    pooled = c.median([r["s"] for r in runs["run_scan httpx-pooled"]]) / ref
    return "\n\n".join([
        "### Transport contenders",
        c.summary(f"Transport: whole scan on httpx's default transport, one client per worker, "
                  f"{per_worker:.2f}x the reference; one pooled client {pooled:.2f}x (decision threshold "
                  f"{TRANSPORT_RATIO}x)"),
        "The whole in-process scan (`run_scan`), with the probe layer's client factory swapped for each contender; "
        "interleaved with the reference above, in the same rounds.",
        c.md_table(["clients", "scan (`run_scan`)", "vs reference", "client CPU"], rows),
        f"**httpx's default transport, one client per worker: the whole scan at {per_worker:.2f}x the reference "
        f"({'within' if per_worker <= TRANSPORT_RATIO else 'beyond'} {TRANSPORT_RATIO}x); one pooled client shared "
        f"by all workers: {pooled:.2f}x.**",
    ])


if __name__ == "__main__":
    main()
