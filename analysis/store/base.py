"""The store behind one interface: runs, catalog snapshots, targets, probes, findings, overrides and leases.

:class:`Store` holds every public method once, in SQL both backends speak (SQLite's
``?`` placeholders; the PostgreSQL connection translates them).  A backend supplies
the connection and the few things that differ: how a write transaction starts, how
the tables are listed, how an inserted id comes back, vacuum.  Writers take plain
Python objects; readers return pandas DataFrames built from cursor rows.  A store
written by a newer version of the tool is refused rather than guessed at.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Sequence
from urllib.parse import parse_qsl, unquote, urlsplit

import pandas as pd

from analysis.errors import LeaseLostError, ScopeBusyError, StoreError, UnsupportedStoreError, UsageError
from analysis.schema import Run, is_missing
from analysis.store.lease import (
    LEASE_TTL_S,
    Lease,
    format_since,
    format_time,
    normalise_scope,
    parse_time,
    scopes_overlap,
)
from analysis.store.migrations import MIGRATIONS, SCHEMA_VERSION, Connection
from analysis.taxonomy import RUN_LEVEL, TAXONOMY_VERSION

__all__ = ["Store", "open_store", "display_location", "store_backend", "SCHEMA_VERSION", "RUN_STATUSES",
           "SUCCESSFUL", "POSTGRES_SCHEMES"]

RUN_STATUSES = ("running", "ok", "partial", "failed", "incomplete")
# The one definition of a successful run, used by export, diff, --fail-on and history: "ok", or "partial" (one
# provider of several had a run-level fault; the others were judged, its blocklist rows were carried forward).
SUCCESSFUL = ("ok", "partial")
POSTGRES_SCHEMES = ("postgresql", "postgres")
# The tables a store copy moves, parents first; leases are not copied (they belong to live processes).
DATA_TABLES = ("runs", "catalog", "targets", "probes", "findings", "overrides")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------- locations


def store_backend(location: str | os.PathLike[str]) -> str:
    """``"sqlite"`` for a path, ``"postgresql"`` for a ``postgresql://`` (or ``postgres://``) URL.

    Any other ``scheme://`` raises :class:`UnsupportedStoreError` (exit 2): a URL must
    never become a folder named after its scheme with a SQLite file in it.
    """
    if isinstance(location, str) and (match := _SCHEME.match(location)):
        scheme = match.group(1)
        if scheme.lower() in POSTGRES_SCHEMES:
            return "postgresql"
        raise UnsupportedStoreError(f"--store {scheme}://... is not supported: the store is a SQLite file path or a "
                                    "postgresql:// URL")
    return "sqlite"


def display_location(location: str | os.PathLike[str]) -> str:
    """A store's location as it may be shown: a path as it is, a URL without its password.

    The password goes whether it is in the user part (``user:secret@host``) or a
    ``password=`` query parameter; everything else (user, host, port, database,
    options) stays, so that the text still says which store is meant.
    """
    text = os.fspath(location)
    if not _SCHEME.match(text):
        return text
    try:
        parts = urlsplit(text)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostinfo = netloc.rpartition("@")
            netloc = f"{userinfo.split(':', 1)[0]}@{hostinfo}"
        # The other parameters stay byte for byte: the shown URL is also the one a resume hint tells to use.
        query = "&".join(p for p in parts.query.split("&")
                         if p and unquote(p.split("=", 1)[0]).strip().lower() != "password")
        return (f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
                + (f"#{parts.fragment}" if parts.fragment else ""))
    except ValueError:  # a URL too broken to parse: show its scheme only, never a part that may be a secret
        return f"{text.split('://', 1)[0]}://..."


def password_of(location: str) -> str | None:
    """The password in a store URL (to scrub it from a driver's messages), or ``None``."""
    try:
        parts = urlsplit(location)
        found = [v for k, v in parse_qsl(parts.query) if k.lower() == "password"]
        return parts.password or (found[0] if found else None)
    except ValueError:
        return None


# --------------------------------------------------------------------------- helpers


# One encoder: json.dumps with options builds a new one on every call, and a scan stores tens of thousands of cells.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _loads(text: Any, default: Any) -> Any:
    if text is None or (isinstance(text, float) and text != text):
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


def _opt_bool(value: Any) -> bool | None:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return bool(value)


def _opt(value: Any) -> Any:
    if is_missing(value):
        return None
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return value


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a run's owner, a lease's holder, a dashboard scan)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def insert_sql(table: str, columns: Sequence[str]) -> str:
    """An INSERT that names its columns: a migration that adds or reorders columns cannot shift the values."""
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def _canaries(value: Any) -> dict[str, list[str]]:
    """Canaries per provider; runs before taxonomy v2 stored a plain list (one provider, or the bare route)."""
    if isinstance(value, list):
        return {"": [str(v) for v in value]} if value else {}
    return {str(k): [str(v) for v in vs] for k, vs in value.items()} if isinstance(value, dict) else {}


def _cell(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or value is None:  # most cells: stored as they are
        return value
    if kind is float:
        return value if value == value else None  # NaN is NULL
    value = _opt(value)
    if isinstance(value, (list, dict)):
        return _dumps(value)
    if isinstance(value, bool):
        return int(value)
    return value


# --------------------------------------------------------------------------- the store


class Store:
    """One store.  Use :func:`open_store`, ideally as a context manager.

    ``Store(location)`` picks the backend from the location, like :func:`open_store`.
    ``readonly=True`` is for readers (exports, diff, reports, the dashboard): the store
    is never migrated or written.  ``location`` is what was given (a URL may hold a
    password: for reopening only); ``display`` is what messages show.  ``clock`` and
    ``lease_ttl_s`` are the lease's time, injectable for tests.
    """

    backend: ClassVar[str] = ""
    db: Connection
    location: str
    display: str
    path: Path | str  # the SQLite file; for another backend, ``display`` (messages name the store by it)
    readonly: bool

    def __new__(cls, location: str | os.PathLike[str] = "", *, create: bool = True,
                readonly: bool = False) -> "Store":
        if cls is Store:  # Store(path) as before: the backend follows from the location
            if store_backend(location) == "postgresql":
                from analysis.store.postgres import PostgresStore

                return super().__new__(PostgresStore)
            from analysis.store.sqlite import SQLiteStore

            return super().__new__(SQLiteStore)
        return super().__new__(cls)

    def __init__(self, location: str | os.PathLike[str], *, create: bool = True, readonly: bool = False) -> None:
        raise TypeError("Store is abstract: construct it through open_store() or Store(location)")

    def _init_common(self, location: str | os.PathLike[str], readonly: bool) -> None:
        self.location = os.fspath(location)
        self.display = display_location(self.location)
        self.readonly = readonly
        self.clock: Callable[[], datetime] = _utcnow
        self.lease_ttl_s = LEASE_TTL_S

    # -- what a backend supplies

    def _tables(self) -> set[str]:
        raise NotImplementedError

    def _columns(self, table: str) -> list[str]:
        raise NotImplementedError

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction: committed on success, rolled back on any error, the driver's errors
        translated.  Writers queue behind each other (SQLite: ``BEGIN IMMEDIATE``)."""
        raise NotImplementedError
        yield self.db  # pragma: no cover - a generator for the type checker

    def _insert_id(self, sql: str, params: Sequence[Any]) -> int:
        """Run an INSERT into a table with an ``id`` column and return the new id."""
        raise NotImplementedError

    def _rows(self, cur: Any) -> list[Any]:
        """All rows of a cursor (SQLite reads pages lazily and may fail here)."""
        return list(cur.fetchall())

    def _lock_for_writers(self, db: Connection) -> None:
        """Inside :meth:`transaction`: make concurrent migrations and lease takers queue (SQLite already does)."""

    def _after_migration(self, db: Connection, version: int) -> None:
        """Inside a migration's transaction, after it was recorded."""

    def id_high_water(self, table: str) -> int:
        """The highest id ever handed out in ``table`` (an id is never reused, even after a prune)."""
        raise NotImplementedError

    def set_id_high_water(self, db: Connection, table: str, value: int) -> None:
        """Make the next id of ``table`` at least ``value + 1`` (after a copy that kept the ids)."""
        raise NotImplementedError

    def vacuum(self) -> None:
        """Maintenance after a prune: give the space of deleted rows back (SQLite: compact the file)."""
        raise NotImplementedError

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """One writing statement, in its own transaction."""
        return self.db.execute(sql, params)

    # -- schema

    def _applied(self) -> set[int]:
        if "schema_migrations" not in self._tables():
            return set()
        return {int(row[0]) for row in self.db.execute("SELECT version FROM schema_migrations")}

    def _foreign_kind(self) -> str:
        """How a database of another application is named in the refusal."""
        return "a database"

    def _check_ours(self) -> None:
        """Refuse another application's database, and a store from a newer version of this tool."""
        tables = self._tables()
        if tables and "schema_migrations" not in tables:
            raise StoreError(f"{self.display} is {self._foreign_kind()} of another application (tables: "
                             f"{', '.join(sorted(tables)[:5])}); refusing to touch it")
        newest = max(self._applied(), default=0)
        if newest > SCHEMA_VERSION:
            raise StoreError(f"store {self.display} has schema version {newest}, newer than this tool's "
                             f"{SCHEMA_VERSION}: upgrade the tool (the store was left untouched)")

    def _migrate(self) -> None:
        for version, name, migrate in MIGRATIONS:
            if version in self._applied():
                continue
            with self.transaction() as db:
                self._lock_for_writers(db)
                db.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)""")
                # Another process may have applied it while this one waited for the lock.
                if db.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone():
                    continue
                migrate(db)
                db.execute(insert_sql("schema_migrations", ("version", "name", "applied_at")), (version, name, _now()))
                self._after_migration(db, version)

    def schema_version(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0])

    def _tx(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        with self.transaction() as db:
            db.executemany(sql, rows)

    # -- writers

    def create_run(self, *, source: str, provider: str, hub_url: str | None, router_url: str | None,
                   settings: dict[str, Any], tool_version: str = "", mode: str = "probe",
                   taxonomy_version: int = TAXONOMY_VERSION) -> int:
        """Insert a ``running`` run and return its id.  ``mode`` is ``probe`` or ``predict``."""
        return self._insert_id(
            "INSERT INTO runs (started_at, status, source, provider, hub_url, router_url, settings_json, tool_version,"
            " mode, pid, host, taxonomy_version) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (_now(), source, provider, hub_url, router_url, _dumps(settings), tool_version, mode, os.getpid(),
             socket.gethostname(), taxonomy_version))

    def set_faulted(self, run_id: int, faulted: dict[str, dict[str, str]]) -> None:
        """Record the providers with a run-level fault in this run (provider -> reason, cause, hint)."""
        self._write("UPDATE runs SET faulted_json = ? WHERE id = ?", (_dumps(faulted), run_id))

    def set_canaries(self, run_id: int, canaries: dict[str, list[str]]) -> None:
        """The canaries used, per provider (``""``: the bare route), as model strings."""
        self._write("UPDATE runs SET canaries_json = ? WHERE id = ?", (_dumps(canaries), run_id))

    def save_catalog(self, run_id: int, catalog: pd.DataFrame) -> None:
        # Column by column (tolist() gives plain Python values), not through to_dict's per-row dicts.
        c = {name: catalog[name].tolist() for name in catalog.columns}
        rows = [(run_id, model_id, author, _opt(tag), _dumps(list(tags)), _opt(library), gated, _opt(downloads),
                 _opt(likes), _opt(created), _opt(modified), _dumps(mapping), shape,
                 None if _opt_bool(listed) is None else int(bool(listed)), _dumps(list(providers)))
                for (model_id, author, tag, tags, library, gated, downloads, likes, created, modified, mapping, shape,
                     listed, providers)
                in zip(c["model_id"], c["author"], c["pipeline_tag"], c["tags"], c["library_name"], c["gated"],
                       c["downloads"], c["likes"], c["created_at"], c["last_modified"], c["mapping"],
                       c["mapping_shape"], c["in_router_list"], c["router_providers"])]
        self._tx(insert_sql("catalog", ("run_id", "model_id", "author", "pipeline_tag", "tags_json", "library_name",
                                        "gated", "downloads", "likes", "created_at", "last_modified", "mapping_json",
                                        "mapping_shape", "in_router_list", "router_providers_json")), rows)

    def save_targets(self, run_id: int, targets: Iterable[Any]) -> None:
        self._tx(insert_sql("targets", ("run_id", "seq", "model_id", "provider", "model_string")),
                 [(run_id, i, t.model_id, t.provider, t.model_string) for i, t in enumerate(targets)])

    def save_probes(self, run_id: int, results: Iterable[Any]) -> None:
        """Commit a batch of :class:`~analysis.pipeline.probe.ProbeResult` in one transaction."""
        rows = []
        for r in results:
            rows.append((run_id, r.kind, r.model_id, r.provider, r.route_for or "", r.model_string,
                         r.url, r.http_status, r.outcome, r.error_code, r.error_message, r.latency_ms, r.attempts,
                         _dumps([a.__dict__ for a in r.attempt_log]), r.started_at, r.finished_at, r.note,
                         getattr(r, "settings", "") or ""))
        self._tx(insert_sql("probes", ("run_id", "kind", "model_id", "provider", "route_for", "model_string", "url",
                                       "http_status", "outcome", "error_code", "error_message", "latency_ms",
                                       "attempts", "attempt_log_json", "started_at", "finished_at", "note",
                                       "settings")), rows)

    def save_findings(self, run_id: int, findings: pd.DataFrame) -> None:
        columns = self._columns("findings")
        with self.transaction() as db:
            db.execute("DELETE FROM findings WHERE run_id = ?", (run_id,))
            findings = findings.copy()
            if "alternatives" in findings.columns:
                findings["alternatives_json"] = [_dumps(list(a) if isinstance(a, (list, tuple)) else [])
                                                 for a in findings["alternatives"]]
            cols = [c for c in columns if c != "run_id" and c in findings.columns]
            sql = f"INSERT INTO findings (run_id, {', '.join(cols)}) VALUES (?{', ?' * len(cols)})"
            # Column by column: tolist() gives plain Python values at once, so each cell is converted once.
            cells = [[_cell(v) for v in findings[c].tolist()] for c in cols]
            values = [(run_id, *row) for row in zip(*cells)]
            if values:
                db.executemany(sql, values)

    def finish_run(self, run_id: int, status: str, *, failure_reason: str | None = None,
                   failure_message: str | None = None, counts: dict[str, int] | None = None,
                   n_targets: int | None = None, n_probed: int | None = None, n_ok: int | None = None,
                   n_blocked: int | None = None, n_transient: int | None = None) -> None:
        """Record a run's end: ``ok``, ``partial``, ``failed`` or ``incomplete``."""
        if status not in RUN_STATUSES:
            raise ValueError(f"bad run status {status!r}")
        started = self.db.execute("SELECT started_at FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
        finished = _now()
        duration = (datetime.fromisoformat(finished.replace("Z", "+00:00"))
                    - datetime.fromisoformat(started.replace("Z", "+00:00"))).total_seconds()
        self._write(
            "UPDATE runs SET status = ?, finished_at = ?, failure_reason = ?, failure_message = ?, counts_json = ?,"
            " n_targets = COALESCE(?, n_targets), n_probed = ?, n_ok = ?, n_blocked = ?, n_transient = ?,"
            " duration_s = ? WHERE id = ?",
            (status, finished, failure_reason, failure_message, _dumps(counts or {}), n_targets, n_probed, n_ok,
             n_blocked, n_transient, round(duration, 3), run_id))

    def change_marker(self) -> tuple[int, ...]:
        """Numbers that change with every commit a scan or an operator makes: a cache key for readers of a database
        store (a file store uses its files' times and sizes instead).  A run's status change moves the weighted
        status sum, its end the finished-at sum, a new probe the probe count, an override added or removed the
        overrides' count and id sums (ids are never reused)."""
        runs = self.db.execute(
            "SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(SUM(id * CASE status WHEN 'running' THEN 1 "
            "WHEN 'ok' THEN 2 WHEN 'partial' THEN 3 WHEN 'failed' THEN 5 WHEN 'incomplete' THEN 7 ELSE 11 END), 0), "
            "COALESCE(SUM(LENGTH(COALESCE(finished_at, ''))), 0), COALESCE(SUM(COALESCE(n_probed, 0)), 0) "
            "FROM runs").fetchone()
        overrides = self.db.execute("SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(SUM(id), 0) FROM overrides"
                                    ).fetchone()
        rows = [self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in ("probes", "findings")]
        return tuple(int(v) for v in (*runs, *overrides, *rows))

    def add_run_usage(self, run_id: int, *, prompt_tokens: int, completion_tokens: int, spent_usd: float,
                      unpriced_answers: int) -> None:
        """Add one invocation's token usage and estimated spend to the run's (a resume adds to what is there)."""
        self._write("UPDATE runs SET prompt_tokens = COALESCE(prompt_tokens, 0) + ?, "
                    "completion_tokens = COALESCE(completion_tokens, 0) + ?, spent_usd = COALESCE(spent_usd, 0) + ?, "
                    "unpriced_answers = COALESCE(unpriced_answers, 0) + ? WHERE id = ?",
                    (prompt_tokens, completion_tokens, spent_usd, unpriced_answers, run_id))

    def set_run_status(self, run_id: int, status: str) -> None:
        """Set a run's status; a run set back to ``running`` is owned by this process."""
        if status == "running":
            self._write("UPDATE runs SET status = ?, pid = ?, host = ? WHERE id = ?",
                        (status, os.getpid(), socket.gethostname(), run_id))
        else:
            self._write("UPDATE runs SET status = ? WHERE id = ?", (status, run_id))

    def add_override(self, *, model_id: str, provider: str, action: str, reason: str, author: str,
                     expires_at: str | None) -> int:
        """Record an operator's ``allow`` or ``block`` of a model (``provider == ""``: every provider)."""
        return self._insert_id(
            "INSERT INTO overrides (model_id, provider, action, reason, author, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)", (model_id, provider, action, reason, author, _now(), expires_at))

    def remove_override(self, override_id: int) -> bool:
        return bool(self._write("DELETE FROM overrides WHERE id = ?", (override_id,)).rowcount == 1)

    def overrides(self) -> pd.DataFrame:
        """Every override, oldest first (expired ones too: :mod:`analysis.outputs.overrides` decides)."""
        return self._frame("SELECT * FROM overrides ORDER BY id")

    def claim_run(self, run_id: int) -> bool:
        """Take an ``incomplete`` run for this process, atomically: ``False`` when another process got there first.

        Two resumes of one run must never probe the same targets: only the one whose
        update changed the row goes on.
        """
        cur = self._write("UPDATE runs SET status = 'running', pid = ?, host = ? WHERE id = ? AND status = "
                          "'incomplete'", (os.getpid(), socket.gethostname(), run_id))
        return bool(cur.rowcount == 1)

    def mark_stale_runs(self) -> list[int]:
        """Mark ``incomplete`` every ``running`` run whose process on this host is gone (killed).

        Runs owned by another host are left alone: we cannot tell whether they still run.
        """
        host = socket.gethostname()
        stale = []
        for run_id, pid, run_host in self._rows(self.db.execute("SELECT id, pid, host FROM runs WHERE status = "
                                                                "'running'")):
            if run_host == host and pid is not None and not process_alive(int(pid)):
                stale.append(int(run_id))
        for run_id in stale:
            self._write("UPDATE runs SET status = 'incomplete' WHERE id = ? AND status = 'running'", (run_id,))
        return stale

    # -- leases: one scan at a time per scope

    def _lease_expired(self, lease: Lease, now: datetime) -> bool:
        """Past its TTL, or held by a process of this host that is gone (killed: no need to wait for the TTL)."""
        if parse_time(lease.expires_at) <= now:
            return True
        return lease.host == socket.gethostname() and not process_alive(lease.pid)

    def _busy(self, lease: Lease, now: datetime) -> ScopeBusyError:
        run = f", run {lease.run_id}" if lease.run_id is not None else ""
        return ScopeBusyError(
            f"a scan of {lease.providers} ({lease.source}) is running since {format_since(lease.started_at, now)} "
            f"(pid {lease.pid}, host {lease.host}{run}) in {self.display}",
            source=lease.source, providers=lease.providers, pid=lease.pid, host=lease.host,
            started_at=lease.started_at, run_id=lease.run_id)

    def try_acquire_lease(self, source: str, providers: str, *, run_id: int | None = None,
                          ttl_s: float | None = None) -> Lease:
        """Take the lease of (source, providers) now, or raise :class:`ScopeBusyError` naming the live holder.

        Atomic on both backends: takers queue on the store's write lock (SQLite's
        ``BEGIN IMMEDIATE``, PostgreSQL's lock on the leases table), drop the expired
        leases of the source, check the live ones for an overlapping provider set,
        and insert this one, in one transaction.
        """
        now = self.clock()
        ttl = self.lease_ttl_s if ttl_s is None else ttl_s
        scope = normalise_scope(providers)
        stamp = format_time(now)
        lease = Lease(id=0, source=source, providers=scope, run_id=run_id, holder=secrets.token_hex(16),
                      pid=os.getpid(), host=socket.gethostname(), started_at=stamp, heartbeat_at=stamp,
                      expires_at=format_time(now + timedelta(seconds=ttl)))
        with self.transaction() as db:
            self._lock_for_writers(db)
            rows = self._rows(db.execute(f"SELECT {', '.join(Lease.COLUMNS)} FROM leases WHERE source = ? "
                                         "ORDER BY id", (source,)))
            for held in map(Lease.from_row, rows):
                if self._lease_expired(held, now):
                    db.execute("DELETE FROM leases WHERE id = ?", (held.id,))
                elif scopes_overlap(scope, held.providers):
                    raise self._busy(held, now)
            columns = [c for c in Lease.COLUMNS if c != "id"]
            new_id = self._insert_id(insert_sql("leases", columns), [getattr(lease, c) for c in columns])
        return Lease(**{**lease.__dict__, "id": new_id})

    def acquire_lease(self, source: str, providers: str, *, run_id: int | None = None, ttl_s: float | None = None,
                      wait_s: float = 0.0, poll_s: float = 1.0,
                      sleep: Callable[[float], None] = time.sleep) -> Lease:
        """Take the lease of a scope, waiting up to ``wait_s`` seconds (by the store's clock) for a busy one.

        Raises :class:`ScopeBusyError` (exit 3) when the scope is still busy at the
        deadline.  ``sleep`` and :attr:`clock` are injectable: tests never sleep.
        """
        deadline = self.clock() + timedelta(seconds=max(wait_s, 0.0))
        while True:
            try:
                return self.try_acquire_lease(source, providers, run_id=run_id, ttl_s=ttl_s)
            except ScopeBusyError:
                left = (deadline - self.clock()).total_seconds()
                if left <= 0:
                    raise
                sleep(min(poll_s, left))

    def renew_lease(self, lease: Lease, *, ttl_s: float | None = None) -> Lease:
        """The heartbeat: push the lease's expiry one TTL past now.  :class:`LeaseLostError` if it was taken over."""
        now = self.clock()
        ttl = self.lease_ttl_s if ttl_s is None else ttl_s
        beat, expires = format_time(now), format_time(now + timedelta(seconds=ttl))
        cur = self._write("UPDATE leases SET heartbeat_at = ?, expires_at = ? WHERE id = ? AND holder = ?",
                          (beat, expires, lease.id, lease.holder))
        if cur.rowcount != 1:
            raise LeaseLostError(f"the lease of {lease.providers} ({lease.source}) in {self.display} was taken over "
                                 "by another scan after this one's heartbeat stopped for longer than its TTL")
        return Lease(**{**lease.__dict__, "heartbeat_at": beat, "expires_at": expires})

    def set_lease_run(self, lease: Lease, run_id: int) -> Lease:
        """Attach the run a lease guards (a scan takes the lease before it creates its run)."""
        cur = self._write("UPDATE leases SET run_id = ? WHERE id = ? AND holder = ?", (run_id, lease.id, lease.holder))
        if cur.rowcount != 1:
            raise LeaseLostError(f"the lease of {lease.providers} ({lease.source}) in {self.display} was taken over "
                                 "by another scan")
        return Lease(**{**lease.__dict__, "run_id": run_id})

    def release_lease(self, lease: Lease) -> bool:
        """Give the scope back; ``False`` if the lease was no longer this holder's."""
        return bool(self._write("DELETE FROM leases WHERE id = ? AND holder = ?",
                                (lease.id, lease.holder)).rowcount == 1)

    def leases(self) -> list[Lease]:
        """The live leases (running scans), oldest first: the dashboard reattaches to a background scan by them."""
        now = self.clock()
        rows = self._rows(self.db.execute(f"SELECT {', '.join(Lease.COLUMNS)} FROM leases ORDER BY id"))
        return [lease for lease in map(Lease.from_row, rows) if not self._lease_expired(lease, now)]

    def lease_of_run(self, run_id: int) -> Lease | None:
        """The live lease guarding ``run_id``, if a scan (or a resume) of it is running."""
        return next((lease for lease in self.leases() if lease.run_id == run_id), None)

    # -- readers

    def _frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        cur = self.db.execute(sql, params)
        cols = [d[0] for d in cur.description]
        return pd.DataFrame(self._rows(cur), columns=cols)

    def runs(self) -> pd.DataFrame:
        """Every run, oldest first."""
        frame = self._frame("SELECT * FROM runs ORDER BY id")
        frame["settings"] = [_loads(s, {}) for s in frame["settings_json"]]
        frame["counts"] = [_loads(s, {}) for s in frame["counts_json"]]
        frame["canaries"] = pd.Series([_canaries(_loads(s, {})) for s in frame["canaries_json"]], index=frame.index,
                                      dtype=object)
        frame["faulted"] = [_loads(s, {}) for s in frame["faulted_json"]]
        return frame.drop(columns=["settings_json", "counts_json", "canaries_json", "faulted_json"])

    def get_run(self, run_id: int) -> Run:
        """One run; :class:`UsageError` if there is no such run."""
        cur = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,))
        row = cur.fetchone()
        if row is None:
            raise UsageError(f"no run {run_id} in {self.display}")
        run = dict(zip([d[0] for d in cur.description], row))
        run["settings"] = _loads(run.pop("settings_json"), {})
        run["counts"] = _loads(run.pop("counts_json"), {})
        run["canaries"] = _canaries(_loads(run.pop("canaries_json"), {}))
        run["faulted"] = _loads(run.pop("faulted_json"), {})
        return Run.from_row(run)

    def latest_run_id(self, status: str | tuple[str, ...] | None = SUCCESSFUL, *, source: str | None = None,
                      provider: str | None = None, before: int | None = None, mode: str | None = None) -> int | None:
        """The newest run with ``status`` (one, several, or any if ``None``; default: successful), optionally in one
        scope or mode."""
        sql = "SELECT MAX(id) FROM runs WHERE 1 = 1"
        params: list[Any] = []
        if isinstance(status, tuple):
            sql += f" AND status IN ({', '.join('?' * len(status))})"
            params.extend(status)
            status = None
        for column, value in (("status", status), ("source", source), ("provider", provider), ("mode", mode)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        if before is not None:
            sql += " AND id < ?"
            params.append(before)
        value = self.db.execute(sql, params).fetchone()[0]
        return int(value) if value is not None else None

    def previous_ok_run(self, run_id: int) -> int | None:
        """The successful run before ``run_id`` with the same source, provider and mode."""
        run = self.get_run(run_id)
        return self.latest_run_id(SUCCESSFUL, source=run.source, provider=run.provider, before=run_id,
                                  mode=run.mode)

    def last_judged_blocklist(self, source: str, scope: str, provider: str, before: int) -> tuple[int | None,
                                                                                                 pd.DataFrame]:
        """The blocked findings of ``provider`` from the newest successful run of the scope that judged it.

        A run that judged a provider holds a finding of it with a reason that is not
        run-level; its blocked rows (carried ones included) are what a fault of that
        provider must carry forward.
        """
        marks = ", ".join("?" * len(RUN_LEVEL))
        row = self.db.execute(
            f"SELECT MAX(r.id) FROM runs r JOIN findings f ON f.run_id = r.id WHERE r.status IN ('ok', 'partial') "
            f"AND r.mode = 'probe' AND r.source = ? AND r.provider = ? AND r.id < ? AND f.provider = ? "
            f"AND f.reason NOT IN ({marks})", (source, scope, before, provider, *sorted(RUN_LEVEL))).fetchone()
        if row[0] is None:
            return None, self.findings(-1)
        findings = self.findings(int(row[0]))
        return int(row[0]), findings[(findings["provider"] == provider) & findings["blocked"]].reset_index(drop=True)

    def prune(self, keep: int) -> list[int]:
        """Delete all but the ``keep`` newest runs (and their rows); return the deleted ids."""
        if keep < 0:
            raise UsageError("--keep cannot be negative")
        ids = [row[0] for row in self._rows(self.db.execute("SELECT id FROM runs ORDER BY id DESC"))]
        doomed = ids[keep:]
        if doomed:
            marks = ", ".join("?" * len(doomed))
            with self.transaction() as db:
                for table in ("findings", "probes", "targets", "catalog"):
                    db.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", doomed)
                db.execute(f"DELETE FROM runs WHERE id IN ({marks})", doomed)
        return sorted(int(i) for i in doomed)

    def catalog(self, run_id: int) -> pd.DataFrame:
        """The catalog snapshot of a run, with JSON cells decoded."""
        frame = self._frame("SELECT * FROM catalog WHERE run_id = ? ORDER BY model_id", (run_id,))
        frame["tags"] = [_loads(s, []) for s in frame["tags_json"]]
        frame["mapping"] = [_loads(s, {}) for s in frame["mapping_json"]]
        frame["router_providers"] = [_loads(s, []) for s in frame["router_providers_json"]]
        frame["in_router_list"] = [_opt_bool(v) for v in frame["in_router_list"]]
        frame["in_router_list"] = frame["in_router_list"].astype(object)
        return frame.drop(columns=["tags_json", "mapping_json", "router_providers_json"])

    def targets(self, run_id: int) -> pd.DataFrame:
        return self._frame("SELECT model_id, provider, model_string FROM targets WHERE run_id = ? ORDER BY seq",
                           (run_id,))

    def probes(self, run_id: int, model_id: str | None = None, *, attempt_logs: bool = True) -> pd.DataFrame:
        """Probe results of a run (one row per route probed), ``attempt_log`` decoded; without it when
        ``attempt_logs`` is false (the verdicts never read it, and decoding every log is most of the read)."""
        columns = "*" if attempt_logs else ", ".join(c for c in self._columns("probes") if c != "attempt_log_json")
        sql = f"SELECT {columns} FROM probes WHERE run_id = ?"
        params: list[Any] = [run_id]
        if model_id is not None:
            sql += " AND model_id = ?"
            params.append(model_id)
        frame = self._frame(sql + " ORDER BY started_at", params)
        if not attempt_logs:
            return frame
        frame["attempt_log"] = [_loads(s, []) for s in frame["attempt_log_json"]]
        return frame.drop(columns=["attempt_log_json"])

    def probe_times(self, run_id: int) -> pd.DataFrame:
        """Per probed verdict of a run: ``model_string``, ``latency_ms`` (of the last attempt) and ``attempts``:
        what the next scan orders its work by (:func:`analysis.pipeline.history.expected_seconds`)."""
        return self._frame("SELECT model_string, latency_ms, attempts FROM findings WHERE run_id = ? AND predicted = 0"
                           " AND latency_ms IS NOT NULL", (run_id,))

    def probed_keys(self, run_id: int) -> set[tuple[str, str]]:
        """(model_id, provider) of every primary probe stored for a run."""
        return {(m, p) for m, p in self._rows(self.db.execute(
            "SELECT model_id, provider FROM probes WHERE run_id = ? AND kind != 'route'", (run_id,)))}

    def findings(self, run_id: int) -> pd.DataFrame:
        """Findings of a run; ``blocked``/``predicted`` as bools."""
        frame = self._frame("SELECT * FROM findings WHERE run_id = ? ORDER BY model_id, provider", (run_id,))
        for col in ("blocked", "predicted", "carried"):
            frame[col] = frame[col].astype(bool)
        frame["in_router_list"] = [_opt_bool(v) for v in frame["in_router_list"]]
        frame["in_router_list"] = frame["in_router_list"].astype(object)
        frame["alternatives"] = [_loads(s, []) for s in frame["alternatives_json"]]
        return frame.drop(columns=["run_id", "alternatives_json"])

    def scope_history(self, source: str, provider: str, *, before: int | None = None,
                      upto: int | None = None) -> pd.DataFrame:
        """Verdicts of the successful probing runs of one scope, oldest first.

        Columns: ``run_id``, ``run_started_at``, ``model_id``, ``provider``,
        ``reason``, ``blocked``.  ``before``/``upto`` bound the run ids
        (exclusive/inclusive).
        """
        # Carried rows and the unjudged rows of a faulted provider are no evidence of this run: they neither
        # add to a failing streak nor end one.
        marks = ", ".join("?" * len(RUN_LEVEL))
        sql = ("SELECT f.run_id, r.started_at AS run_started_at, f.model_id, f.provider, f.reason, f.blocked "
               "FROM findings f JOIN runs r ON r.id = f.run_id WHERE r.status IN ('ok', 'partial') "
               f"AND r.mode = 'probe' AND r.source = ? AND r.provider = ? AND f.carried = 0 "
               f"AND f.reason NOT IN ({marks})")
        params: list[Any] = [source, provider, *sorted(RUN_LEVEL)]
        if before is not None:
            sql += " AND r.id < ?"
            params.append(before)
        if upto is not None:
            sql += " AND r.id <= ?"
            params.append(upto)
        frame = self._frame(sql + " ORDER BY f.run_id", params)
        frame["blocked"] = frame["blocked"].astype(bool)
        return frame

    def model_history(self, model_id: str, provider: str | None = None) -> pd.DataFrame:
        """A model's findings across runs, newest first, with the run's status and times."""
        sql = ("SELECT f.*, r.status AS run_status, r.started_at AS run_started_at, r.source, r.mode AS run_mode, "
               "r.provider AS run_provider FROM findings f JOIN runs r ON r.id = f.run_id WHERE f.model_id = ?")
        params: list[Any] = [model_id]
        if provider is not None:
            sql += " AND f.provider = ?"
            params.append(provider)
        frame = self._frame(sql + " ORDER BY f.run_id DESC", params)
        frame["blocked"] = frame["blocked"].astype(bool)
        frame["alternatives"] = [_loads(s, []) for s in frame["alternatives_json"]]
        return frame.drop(columns=["alternatives_json"])

    # -- whole-store access (store copy)

    def table_columns(self, table: str) -> list[str]:
        return self._columns(table)

    def is_empty(self) -> bool:
        """No row in any data table (a fresh store: a copy may go into it)."""
        return all(self.db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is None
                   for table in (*DATA_TABLES, "leases"))


def open_store(location: str | os.PathLike[str], *, create: bool = True, readonly: bool = False) -> Store:
    """Open (and migrate) the store at ``location``: a SQLite file path, or a ``postgresql://`` URL.

    ``create=False`` requires the store to exist; ``readonly=True`` opens an existing
    store for reading only (it never writes, never migrates on PostgreSQL).  Any other
    URL scheme raises :class:`UnsupportedStoreError` (exit 2).
    """
    return Store(location, create=create, readonly=readonly)
