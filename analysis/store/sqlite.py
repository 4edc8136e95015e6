"""SQLite store (WAL) of runs, catalog snapshots, targets, probes and findings.

Writers take plain Python objects; readers return pandas DataFrames.  The schema
evolves through the ordered functions in ``MIGRATIONS``; each applied version is
recorded in ``schema_migrations``.  A store written by a newer version of the
tool is refused rather than guessed at.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence
from urllib.parse import quote

import pandas as pd

from analysis.config import missing_store_hint
from analysis.errors import StoreError, StoreFullError, UsageError
from analysis.schema import is_missing
from analysis.taxonomy import RUN_LEVEL, TAXONOMY_VERSION

__all__ = ["Store", "open_store", "SCHEMA_VERSION", "RUN_STATUSES", "SUCCESSFUL"]

SQLITE_MAGIC = b"SQLite format 3\x00"
RUN_STATUSES = ("running", "ok", "partial", "failed", "incomplete")
# The one definition of a successful run, used by export, diff, --fail-on and history: "ok", or "partial" (one
# provider of several had a run-level fault; the others were judged, its blocklist rows were carried forward).
SUCCESSFUL = ("ok", "partial")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- migrations


def _script(db: sqlite3.Connection, sql: str) -> None:
    # executescript() would COMMIT first and break the migration's transaction.
    for statement in sql.split(";"):
        if statement.strip():
            db.execute(statement)


def _m001_initial(db: sqlite3.Connection) -> None:
    _script(db, """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL,
            failure_reason TEXT,
            failure_message TEXT,
            source TEXT NOT NULL,
            provider TEXT NOT NULL,
            hub_url TEXT,
            router_url TEXT,
            settings_json TEXT NOT NULL,
            tool_version TEXT,
            n_targets INTEGER,
            n_probed INTEGER,
            n_ok INTEGER,
            n_blocked INTEGER,
            n_transient INTEGER,
            counts_json TEXT,
            duration_s REAL
        );
        CREATE TABLE catalog (
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            model_id TEXT NOT NULL,
            author TEXT,
            pipeline_tag TEXT,
            tags_json TEXT,
            library_name TEXT,
            gated TEXT,
            downloads INTEGER,
            likes INTEGER,
            created_at TEXT,
            last_modified TEXT,
            mapping_json TEXT,
            mapping_shape TEXT,
            in_router_list INTEGER,
            router_providers_json TEXT,
            PRIMARY KEY (run_id, model_id)
        );
        CREATE TABLE targets (
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            model_id TEXT NOT NULL,
            provider TEXT NOT NULL,
            model_string TEXT NOT NULL,
            PRIMARY KEY (run_id, model_id, provider)
        );
        CREATE TABLE probes (
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            model_id TEXT NOT NULL,
            provider TEXT NOT NULL,
            route_for TEXT NOT NULL DEFAULT '',
            model_string TEXT NOT NULL,
            url TEXT NOT NULL,
            http_status INTEGER,
            outcome TEXT NOT NULL,
            error_code TEXT,
            error_message TEXT,
            latency_ms REAL,
            attempts INTEGER NOT NULL,
            attempt_log_json TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT NOT NULL,
            note TEXT,
            PRIMARY KEY (run_id, kind, model_id, route_for, model_string)
        );
        CREATE TABLE findings (
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            model_id TEXT NOT NULL,
            provider TEXT NOT NULL,
            reason TEXT NOT NULL,
            blocked INTEGER NOT NULL,
            predicted INTEGER NOT NULL DEFAULT 0,
            http_status INTEGER,
            pipeline_tag TEXT,
            detail TEXT,
            message TEXT,
            latency_ms REAL,
            attempts INTEGER,
            checked_at TEXT,
            model_string TEXT,
            action TEXT,
            error_code TEXT,
            note TEXT,
            mapping_status TEXT,
            mapping_task TEXT,
            in_router_list INTEGER,
            gated TEXT,
            working_route TEXT,
            PRIMARY KEY (run_id, model_id, provider)
        );
        CREATE INDEX findings_model ON findings (model_id, provider);
        CREATE INDEX runs_scope ON runs (source, provider, status);
    """)


def _m002_history_and_modes(db: sqlite3.Connection) -> None:
    _script(db, """
        ALTER TABLE findings ADD COLUMN first_failed_at TEXT;
        ALTER TABLE findings ADD COLUMN last_ok_at TEXT;
        ALTER TABLE findings ADD COLUMN consecutive_failures INTEGER;
        ALTER TABLE findings ADD COLUMN flaps INTEGER;
        ALTER TABLE findings ADD COLUMN alternatives_json TEXT;
        ALTER TABLE runs ADD COLUMN mode TEXT NOT NULL DEFAULT 'probe';
        ALTER TABLE runs ADD COLUMN canaries_json TEXT
    """)


def _m003_run_owner(db: sqlite3.Connection) -> None:
    _script(db, """
        ALTER TABLE runs ADD COLUMN pid INTEGER;
        ALTER TABLE runs ADD COLUMN host TEXT
    """)


def _m004_taxonomy_v2(db: sqlite3.Connection) -> None:
    # Runs before this migration were judged by taxonomy version 1.
    _script(db, """
        ALTER TABLE runs ADD COLUMN taxonomy_version INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE runs ADD COLUMN faulted_json TEXT;
        ALTER TABLE probes ADD COLUMN settings TEXT NOT NULL DEFAULT '';
        ALTER TABLE findings ADD COLUMN working_settings TEXT;
        ALTER TABLE findings ADD COLUMN error_signature TEXT;
        ALTER TABLE findings ADD COLUMN carried INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX findings_signature ON findings (run_id, error_signature)
    """)


def _m005_overrides(db: sqlite3.Connection) -> None:
    _script(db, """
        CREATE TABLE overrides (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            model_id TEXT NOT NULL,
            provider TEXT NOT NULL DEFAULT '',
            action TEXT NOT NULL CHECK (action IN ('allow', 'block')),
            reason TEXT NOT NULL,
            author TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT
        )
    """)


MIGRATIONS: list[tuple[int, str, Callable[[sqlite3.Connection], None]]] = [
    (1, "initial schema", _m001_initial),
    (2, "history columns, alternatives, run mode and canaries", _m002_history_and_modes),
    (3, "process that owns a running run", _m003_run_owner),
    (4, "taxonomy v2: partial runs, request experiments, error signatures, carried rows", _m004_taxonomy_v2),
    (5, "operator overrides of the blocklist", _m005_overrides),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


# --------------------------------------------------------------------------- helpers


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


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


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _check_is_sqlite(path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise StoreError(f"cannot read store {path}: {exc.strerror}") from None
    if head and head != SQLITE_MAGIC:
        raise StoreError(f"{path} is not an SQLite store (refusing to touch it)")


def _store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    """The one translation of SQLite's errors into ours, with an exit code and a true message."""
    text = str(exc).lower()
    if "full" in text:
        return StoreFullError(f"the store {path} is full (no disk space left, or its page limit reached): free "
                              "space, then resume the run (python -m analysis scan --resume)")
    if "readonly" in text or "read-only" in text:
        return StoreError(f"the store {path} is read-only: a command that writes needs a writable store")
    if "malformed" in text or "not a database" in text or "encrypted" in text:
        return StoreError(f"the store {path} is corrupt ({exc}): restore it from a backup or start a new one "
                          "(it was left as it is)")
    return StoreError(f"cannot use store {path}: {exc}")


class _Connection(sqlite3.Connection):
    """A connection whose statements raise our :class:`StoreError` (with its exit code and a true message)
    instead of SQLite's errors: the one place where they are translated."""

    store_path: Path = Path()

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, parameters)
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError):
            raise  # our own bug (a duplicate row, a bad statement): exit 4, as it should
        except sqlite3.Error as exc:
            raise _store_error(self.store_path, exc) from None

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        try:
            return super().executemany(sql, parameters)
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError):
            raise
        except sqlite3.Error as exc:
            raise _store_error(self.store_path, exc) from None


def _connect(target: str | Path, path: Path, uri: bool = False) -> sqlite3.Connection:
    db = sqlite3.connect(target, uri=uri, timeout=30, isolation_level=None, check_same_thread=False,
                         factory=_Connection)
    db.store_path = path
    return db


class Store:
    """One SQLite store file.  Use :func:`open_store`, ideally as a context manager.

    ``readonly=True`` is for readers (exports, diff, reports, the dashboard): the file is
    opened read-only and never migrated or written, so a read-only or shared file can be
    read.  A store of an older schema is migrated first when the file is writable.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, readonly: bool = False) -> None:
        scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", str(path))
        if scheme:  # a URL would otherwise become a folder named "postgresql:" with a SQLite file in it
            raise StoreError(f"--store {scheme.group(1)}://... is not supported: the store is a SQLite file path")
        self.path = Path(path)
        self.readonly = readonly
        if self.path.exists():
            if self.path.is_dir():
                raise StoreError(f"store path {self.path} is a directory")
            _check_is_sqlite(self.path)
        elif not create or readonly:
            raise StoreError(missing_store_hint(self.path))
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the store's folder {self.path.parent}: {exc.strerror}") from None
            if not os.access(self.path.parent, os.W_OK):
                raise StoreError(f"cannot write a store in {self.path.parent}: permission denied")
        if readonly:
            self.db = self._open_readonly()
            return
        try:
            self.db = _connect(self.path, self.path)
            self.db.execute("PRAGMA busy_timeout = 30000")
            self.db.execute("PRAGMA foreign_keys = ON")
            self._check_ours()  # before anything writes: a foreign or newer file is left as it is
            mode = self.db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal" and create:
                raise StoreError(f"cannot switch {self.path} to WAL mode (got {mode})")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
            self.mark_stale_runs()
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from None
        except StoreError:
            self.db.close()
            raise

    def _open_readonly(self) -> sqlite3.Connection:
        """A connection that cannot write.

        A writable file is opened as usual with ``query_only`` set: readers then share
        the WAL with a running scan and leave no -wal/-shm files behind.  A file this
        process cannot write is opened ``mode=ro``, or, when its folder has no -shm to
        share either, as immutable.
        """
        writable = os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)
        if writable:
            db = self._connect_ro(str(self.path), uri=False)
            if max(v for v, _, _ in MIGRATIONS) > max(self._applied_of(db), default=0):
                db.close()
                Store(self.path, create=False).close()  # an older schema: migrate once, as a writer
                db = self._connect_ro(str(self.path), uri=False)
            db.execute("PRAGMA query_only = ON")
            return db
        uri = f"file:{quote(str(self.path.resolve()))}"
        try:
            db = self._connect_ro(f"{uri}?mode=ro")
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except StoreError as exc:
            if "unable to open" not in str(exc).lower():
                raise
            db = self._connect_ro(f"{uri}?immutable=1")
        if max(v for v, _, _ in MIGRATIONS) > max(self._applied_of(db), default=0):
            db.close()
            raise StoreError(f"store {self.path} was written by an older version and is not writable, so it "
                             "cannot be upgraded: open it once with a command that writes")
        return db

    def _connect_ro(self, target: str, uri: bool = True) -> sqlite3.Connection:
        db = _connect(target, self.path, uri=uri)
        try:
            db.execute("PRAGMA busy_timeout = 30000")
            self.db = db
            self._check_ours()
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _applied_of(db: sqlite3.Connection) -> set[int]:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "schema_migrations" not in tables:
            return set()
        return {int(row[0]) for row in db.execute("SELECT version FROM schema_migrations")}

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed on success, rolled back on any error, SQLite's errors translated.

        SQLite may have rolled back already (a full disk does), so the rollback is only
        attempted while a transaction is open: the true error is never masked by "cannot
        rollback - no transaction is active".
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def _write(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """One writing statement, in its own transaction."""
        return self.db.execute(sql, params)

    # -- lifecycle

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tables(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _applied(self) -> set[int]:
        if "schema_migrations" not in self._tables():
            return set()
        return {int(row[0]) for row in self.db.execute("SELECT version FROM schema_migrations")}

    def _check_ours(self) -> None:
        """Refuse another application's database, and a store from a newer version of this tool."""
        tables = self._tables()
        if tables and "schema_migrations" not in tables:
            raise StoreError(f"{self.path} is an SQLite database of another application (tables: "
                             f"{', '.join(sorted(tables)[:5])}); refusing to touch it")
        newest = max(self._applied(), default=0)
        if newest > SCHEMA_VERSION:
            raise StoreError(f"store {self.path} has schema version {newest}, newer than this tool's "
                             f"{SCHEMA_VERSION}: upgrade the tool (the store was left untouched)")

    def _migrate(self) -> None:
        applied = self._applied()
        for version, name, migrate in MIGRATIONS:
            if version in applied:
                continue
            with self.transaction() as db:
                db.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)""")
                migrate(db)
                db.execute(_insert("schema_migrations", ("version", "name", "applied_at")), (version, name, _now()))
                db.execute(f"PRAGMA user_version = {version}")

    def schema_version(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0])

    def _tx(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.transaction() as db:
            db.executemany(sql, rows)

    # -- writers

    def create_run(self, *, source: str, provider: str, hub_url: str | None, router_url: str | None,
                   settings: dict[str, Any], tool_version: str = "", mode: str = "probe",
                   taxonomy_version: int = TAXONOMY_VERSION) -> int:
        """Insert a ``running`` run and return its id.  ``mode`` is ``probe`` or ``predict``."""
        cur = self._write(
            "INSERT INTO runs (started_at, status, source, provider, hub_url, router_url, settings_json, tool_version,"
            " mode, pid, host, taxonomy_version) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (_now(), source, provider, hub_url, router_url, _dumps(settings), tool_version, mode, os.getpid(),
             socket.gethostname(), taxonomy_version))
        return int(cur.lastrowid or 0)

    def set_faulted(self, run_id: int, faulted: dict[str, dict[str, str]]) -> None:
        """Record the providers with a run-level fault in this run (provider -> reason, cause, hint)."""
        self._write("UPDATE runs SET faulted_json = ? WHERE id = ?", (_dumps(faulted), run_id))

    def set_canaries(self, run_id: int, canaries: dict[str, list[str]]) -> None:
        """The canaries used, per provider (``""``: the bare route), as model strings."""
        self._write("UPDATE runs SET canaries_json = ? WHERE id = ?", (_dumps(canaries), run_id))

    def save_catalog(self, run_id: int, catalog: pd.DataFrame) -> None:
        rows = [(run_id, r["model_id"], r["author"], _opt(r["pipeline_tag"]), _dumps(list(r["tags"])),
                 _opt(r["library_name"]), r["gated"], _opt(r["downloads"]), _opt(r["likes"]), _opt(r["created_at"]),
                 _opt(r["last_modified"]), _dumps(r["mapping"]), r["mapping_shape"],
                 None if _opt_bool(r["in_router_list"]) is None else int(bool(r["in_router_list"])),
                 _dumps(list(r["router_providers"])))
                for r in catalog.to_dict("records")]
        self._tx(_insert("catalog", ("run_id", "model_id", "author", "pipeline_tag", "tags_json", "library_name",
                                     "gated", "downloads", "likes", "created_at", "last_modified", "mapping_json",
                                     "mapping_shape", "in_router_list", "router_providers_json")), rows)

    def save_targets(self, run_id: int, targets: Iterable[Any]) -> None:
        self._tx(_insert("targets", ("run_id", "seq", "model_id", "provider", "model_string")),
                 [(run_id, i, t.model_id, t.provider, t.model_string) for i, t in enumerate(targets)])

    def save_probes(self, run_id: int, results: Iterable[Any]) -> None:
        """Commit a batch of :class:`~analysis.pipeline.probe.ProbeResult` in one transaction."""
        rows = []
        for r in results:
            rows.append((run_id, r.kind, r.model_id, r.provider, r.route_for or "", r.model_string,
                         r.url, r.http_status, r.outcome, r.error_code, r.error_message, r.latency_ms, r.attempts,
                         _dumps([a.__dict__ for a in r.attempt_log]), r.started_at, r.finished_at, r.note,
                         getattr(r, "settings", "") or ""))
        if rows:
            self._tx(_insert("probes", ("run_id", "kind", "model_id", "provider", "route_for", "model_string", "url",
                                        "http_status", "outcome", "error_code", "error_message", "latency_ms",
                                        "attempts", "attempt_log_json", "started_at", "finished_at", "note",
                                        "settings")), rows)

    def save_findings(self, run_id: int, findings: pd.DataFrame) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM findings WHERE run_id = ?", (run_id,))
            findings = findings.copy()
            if "alternatives" in findings.columns:
                findings["alternatives_json"] = [_dumps(list(a) if isinstance(a, (list, tuple)) else [])
                                                 for a in findings["alternatives"]]
            cols = [c for c in self._columns("findings") if c != "run_id" and c in findings.columns]
            sql = f"INSERT INTO findings (run_id, {', '.join(cols)}) VALUES (?{', ?' * len(cols)})"
            values = []
            for rec in findings[cols].itertuples(index=False, name=None):
                values.append((run_id, *[_cell(v) for v in rec]))
            self.db.executemany(sql, values)

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
        cur = self._write("INSERT INTO overrides (model_id, provider, action, reason, author, created_at, expires_at)"
                          " VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (model_id, provider, action, reason, author, _now(), expires_at))
        return int(cur.lastrowid or 0)

    def remove_override(self, override_id: int) -> bool:
        return self._write("DELETE FROM overrides WHERE id = ?", (override_id,)).rowcount == 1

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
        return cur.rowcount == 1

    def mark_stale_runs(self) -> list[int]:
        """Mark ``incomplete`` every ``running`` run whose process on this host is gone (killed).

        Runs owned by another host are left alone: we cannot tell whether they still run.
        """
        host = socket.gethostname()
        stale = []
        for run_id, pid, run_host in self.db.execute("SELECT id, pid, host FROM runs WHERE status = 'running'"):
            if run_host == host and pid is not None and not _process_alive(int(pid)):
                stale.append(int(run_id))
        for run_id in stale:
            self._write("UPDATE runs SET status = 'incomplete' WHERE id = ? AND status = 'running'", (run_id,))
        return stale

    def _columns(self, table: str) -> list[str]:
        return [row[1] for row in self.db.execute(f"PRAGMA table_info({table})")]

    # -- readers

    def _frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        cur = self.db.execute(sql, params)
        cols = [d[0] for d in cur.description]
        try:
            return pd.DataFrame(cur.fetchall(), columns=cols)
        except sqlite3.Error as exc:  # a corrupt page may show only when its rows are read
            raise _store_error(self.path, exc) from None

    def vacuum(self) -> None:
        """Compact the file (after a prune)."""
        self._write("VACUUM")

    def runs(self) -> pd.DataFrame:
        """Every run, oldest first."""
        frame = self._frame("SELECT * FROM runs ORDER BY id")
        frame["settings"] = [_loads(s, {}) for s in frame["settings_json"]]
        frame["counts"] = [_loads(s, {}) for s in frame["counts_json"]]
        frame["canaries"] = pd.Series([_canaries(_loads(s, {})) for s in frame["canaries_json"]], index=frame.index,
                                      dtype=object)
        frame["faulted"] = [_loads(s, {}) for s in frame["faulted_json"]]
        return frame.drop(columns=["settings_json", "counts_json", "canaries_json", "faulted_json"])

    def get_run(self, run_id: int) -> dict[str, Any]:
        """One run as a dict; :class:`UsageError` if there is no such run."""
        cur = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,))
        row = cur.fetchone()
        if row is None:
            raise UsageError(f"no run {run_id} in {self.path}")
        run = dict(zip([d[0] for d in cur.description], row))
        run["settings"] = _loads(run.pop("settings_json"), {})
        run["counts"] = _loads(run.pop("counts_json"), {})
        run["canaries"] = _canaries(_loads(run.pop("canaries_json"), {}))
        run["faulted"] = _loads(run.pop("faulted_json"), {})
        return run

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
        return self.latest_run_id(SUCCESSFUL, source=run["source"], provider=run["provider"], before=run_id,
                                  mode=run["mode"])

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
        ids = [row[0] for row in self.db.execute("SELECT id FROM runs ORDER BY id DESC")]
        doomed = ids[keep:]
        if doomed:
            marks = ", ".join("?" * len(doomed))
            with self.transaction() as db:
                for table in ("findings", "probes", "targets", "catalog"):
                    db.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", doomed)
                db.execute(f"DELETE FROM runs WHERE id IN ({marks})", doomed)
        return sorted(doomed)

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

    def probes(self, run_id: int, model_id: str | None = None) -> pd.DataFrame:
        """Probe results of a run (one row per route probed), ``attempt_log`` decoded."""
        sql = "SELECT * FROM probes WHERE run_id = ?"
        params: list[Any] = [run_id]
        if model_id is not None:
            sql += " AND model_id = ?"
            params.append(model_id)
        frame = self._frame(sql + " ORDER BY started_at", params)
        frame["attempt_log"] = [_loads(s, []) for s in frame["attempt_log_json"]]
        return frame.drop(columns=["attempt_log_json"])

    def probed_keys(self, run_id: int) -> set[tuple[str, str]]:
        """(model_id, provider) of every primary probe stored for a run."""
        return {(m, p) for m, p in self.db.execute(
            "SELECT model_id, provider FROM probes WHERE run_id = ? AND kind != 'route'", (run_id,))}

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


def _insert(table: str, columns: Sequence[str]) -> str:
    """An INSERT that names its columns: a migration that adds or reorders columns cannot shift the values."""
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def _canaries(value: Any) -> dict[str, list[str]]:
    """Canaries per provider; runs before taxonomy v2 stored a plain list (one provider, or the bare route)."""
    if isinstance(value, list):
        return {"": [str(v) for v in value]} if value else {}
    return {str(k): [str(v) for v in vs] for k, vs in value.items()} if isinstance(value, dict) else {}


def _cell(value: Any) -> Any:
    value = _opt(value)
    if isinstance(value, (list, dict)):
        return _dumps(value)
    if isinstance(value, bool):
        return int(value)
    return value


def open_store(path: str | os.PathLike[str], *, create: bool = True, readonly: bool = False) -> Store:
    """Open (and migrate) the store at ``path``; ``create=False`` requires it to exist; ``readonly=True`` opens
    an existing store for reading only (it never writes)."""
    return Store(path, create=create, readonly=readonly)
