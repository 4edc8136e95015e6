"""Scans that outlive the browser: the dashboard starts ``python -m analysis scan`` as a process of its own.

A scan run inside the Streamlit script dies with the script run: leaving the Scan
page or closing the tab stopped it, and left the run ``incomplete``.  Here the scan
is a detached process (its own session, so no signal meant for the app or the
terminal reaches it; stdin closed; output to a log file in the data dir) that writes
to the store like any CLI scan.  The page then reads everything it shows from the
store: which run is ``running`` and whether its owner process is alive, how many
targets have a result so far, and when the last one was saved.

The token goes to the process in its environment (``HF_TOKEN``), never on its
command line, which any local user can read in ``ps``.  Nothing here imports
Streamlit.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from analysis import config as paths
from analysis.config import ScanConfig
from analysis.errors import RcaError
from analysis.schema import Run
from analysis.store import open_store, store_backend
from analysis.store.base import process_alive

__all__ = ["ScanJob", "ScanProgress", "scan_args", "start_scan", "start_resume", "exit_code", "job_alive",
           "job_run", "owner_alive", "running_run", "stopped_run", "scan_progress", "log_tail", "scan_log_dir",
           "command_line"]


@dataclass(frozen=True)
class ScanJob:
    """A scan process this app started.  It holds no secret: the token was only in the process's environment."""

    pid: int
    store: str
    log: str
    args: tuple[str, ...]  # after ``python -m analysis``
    started_at: str
    resume_of: int | None = None


@dataclass(frozen=True)
class ScanProgress:
    """What the store says about a run so far."""

    run_id: int
    status: str
    mode: str
    owner_alive: bool
    targets: int  # 0 until the catalog has been read and the targets saved
    probed: int  # targets with a stored result
    started_at: str | None
    last_saved_at: str | None  # the newest stored probe result: the run's heartbeat


# pid -> exit code of the processes this app started, filled by their reaper threads.  A finished child
# that nobody waits for stays a zombie, which looks alive to ``kill(pid, 0)``: the run it left
# ``running`` would never be seen as stopped.
_exit_codes: dict[int, int] = {}
_children: dict[int, subprocess.Popen[bytes]] = {}
_lock = threading.Lock()


def scan_log_dir() -> Path:
    """Where dashboard scans write their output: ``scans/`` in the data dir."""
    return paths.data_dir() / "scans"


def scan_args(cfg: ScanConfig, store: str) -> list[str]:
    """``scan`` and the flags for ``cfg`` and ``store``: every setting the Scan page offers, and no token."""
    args = ["scan", "--store", store, "--source", cfg.source, "--provider", cfg.provider,
            "--router-url", cfg.router_url, "--hub-url", cfg.hub_url,
            "--timeout", str(cfg.timeout), "--retries", str(cfg.retries),
            "--max-tokens", str(cfg.max_tokens), "--backoff", str(cfg.backoff),
            "--route-checks", str(cfg.route_checks)]
    if cfg.concurrency is not None:
        args += ["--concurrency", str(cfg.concurrency)]
    if cfg.source == "file" and cfg.catalog_file:
        args += ["--catalog-file", cfg.catalog_file]
    if not cfg.probe:
        args.append("--no-probe")
    return args


def command_line(args: Sequence[str]) -> str:
    """The command a user would type for ``args``, quoted for a POSIX shell."""
    return shlex.join(["python", "-m", "analysis", *args])


def start_scan(cfg: ScanConfig, store: str, *, log_dir: Path | None = None,
               python: str = sys.executable) -> ScanJob:
    """Start ``python -m analysis scan`` for ``cfg`` into ``store``, detached; ``cfg.token`` goes in its environment.

    Raises :class:`analysis.errors.UsageError` for settings the CLI would refuse, before anything starts.
    """
    cfg.validate()
    return _launch(scan_args(cfg, store), store, cfg.token, log_dir, python, None)


def start_resume(run_id: int, store: str, token: str | None, *, log_dir: Path | None = None,
                 python: str = sys.executable) -> ScanJob:
    """Start ``python -m analysis scan --resume RUN --store STORE``, detached, the token in its environment."""
    return _launch(["scan", "--resume", str(run_id), "--store", store], store, token, log_dir, python, run_id)


def _launch(args: list[str], store: str, token: str | None, log_dir: Path | None, python: str,
            resume_of: int | None) -> ScanJob:
    folder = log_dir or scan_log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc)
    log = folder / f"scan-{now:%Y%m%d-%H%M%S-%f}.log"
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}  # the app's own token only when chosen
    if token:
        env["HF_TOKEN"] = token
    if store_backend(store) != "sqlite":  # a database URL may hold a password: never on a command line (ps)
        env["RCA_STORE"] = store
        at = args.index("--store")
        args = args[:at] + args[at + 2:]
    env["PYTHONUNBUFFERED"] = "1"  # the log shows progress as it happens, not when a buffer fills
    with open(log, "wb") as out:
        proc = subprocess.Popen([python, "-m", "analysis", *args], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=paths.PROJECT_ROOT,
                                start_new_session=True)
    with _lock:
        _children[proc.pid] = proc
    threading.Thread(target=_reap, args=(proc,), name=f"reap-scan-{proc.pid}", daemon=True).start()
    return ScanJob(proc.pid, store, str(log), tuple(args), now.isoformat(timespec="seconds"), resume_of)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    code = proc.wait()
    with _lock:
        _exit_codes[proc.pid] = code
        _children.pop(proc.pid, None)


def exit_code(job: ScanJob) -> int | None:
    """The job's exit code once it has ended; ``None`` while it runs (or when this process did not start it)."""
    with _lock:
        return _exit_codes.get(job.pid)


def job_alive(job: ScanJob) -> bool:
    """Whether the job's process still runs."""
    with _lock:
        if job.pid in _exit_codes:
            return False
        if job.pid in _children:
            return True
    return process_alive(job.pid)  # started by an earlier app process: ask the system


def owner_alive(pid: Any, host: Any) -> bool:
    """Whether a ``running`` run's owner process (``pid`` on ``host``) still runs.  A run of another host cannot be
    checked: alive."""
    if host != socket.gethostname():
        return True
    if pid is None or pid != pid:  # NaN from a frame
        return False
    with _lock:
        if int(pid) in _exit_codes:
            return False
    return process_alive(int(pid))


def _runs(store: str) -> list[dict[str, Any]]:
    if store_backend(store) == "sqlite" and not Path(store).is_file():
        return []
    try:
        with open_store(store, readonly=True) as s:
            return [{str(k): v for k, v in r.items()} for r in s.runs().to_dict("records")]
    except RcaError:
        return []


def job_run(job: ScanJob) -> int | None:
    """The run the job works on: the one it resumes, else the newest run its process created (none yet: ``None``)."""
    if job.resume_of is not None:
        return job.resume_of
    host = socket.gethostname()
    ids = [int(r["id"]) for r in _runs(job.store) if r.get("pid") == job.pid and r.get("host") == host]
    return max(ids) if ids else None


def _leased_runs(store: str) -> set[int]:
    """The runs a live scan holds the scope's lease for: the same lease that keeps one scan per scope (and one
    resume per run) tells the dashboard which scans are alive, on this host or another (by their heartbeat)."""
    if store_backend(store) == "sqlite" and not Path(store).is_file():
        return set()
    try:
        with open_store(store, readonly=True) as s:
            return {lease.run_id for lease in s.leases() if lease.run_id is not None}
    except RcaError:
        return set()


def _alive(run: dict[str, Any], leased: set[int]) -> bool:
    # A scan attaches its run to its lease a moment after creating it: until then its own process vouches for it.
    return int(run["id"]) in leased or (run.get("host") == socket.gethostname()
                                        and owner_alive(run.get("pid"), run.get("host")))


def scan_alive(store: str, run: Run) -> bool:
    """Whether ``run``'s scan is alive: its lease is held (on any host), or, in the moment before the lease names
    it, its own process on this host runs."""
    return _alive({"id": run.id, "pid": run.pid, "host": run.host}, _leased_runs(store))


def running_run(store: str) -> int | None:
    """The newest ``running`` run of ``store`` whose scan is alive (its lease is held): a scan to reattach to."""
    leased = _leased_runs(store)
    ids = [int(r["id"]) for r in _runs(store) if r["status"] == "running" and _alive(r, leased)]
    return max(ids) if ids else None


def stopped_run(store: str) -> int | None:
    """The newest run of ``store`` that stopped before finishing: ``incomplete``, or ``running`` with no live
    scan (killed; the next writer of the store marks it ``incomplete``).  ``None`` if there is none."""
    leased = _leased_runs(store)
    ids = [int(r["id"]) for r in _runs(store) if r["status"] == "incomplete"
           or (r["status"] == "running" and not _alive(r, leased))]
    return max(ids) if ids else None


def scan_progress(store: str, run_id: int) -> ScanProgress:
    """The run's status, liveness and counts so far, read from the store (read-only: a scan may be writing)."""
    with open_store(store, readonly=True) as s:
        run = s.get_run(run_id)
        targets = len(s.targets(run_id))
        probed = len(s.probed_keys(run_id))
        last = s.db.execute("SELECT MAX(finished_at) FROM probes WHERE run_id = ?", (run_id,)).fetchone()[0]
        leased = s.lease_of_run(run_id) is not None
    status = str(run.status)
    alive = status == "running" and (leased or (run.host == socket.gethostname() and owner_alive(run.pid, run.host)))
    return ScanProgress(run_id, status, str(run.mode or "probe"), alive, targets, probed,
                        run.started_at, last)


def log_tail(job: ScanJob, lines: int = 12) -> str:
    """The last ``lines`` lines of the job's output (the CLI's own lines: the token is never in them)."""
    try:
        with open(job.log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - 16_384, 0))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
