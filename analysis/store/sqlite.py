"""The SQLite backend (WAL): the zero-setup store, one file.

Everything a store does lives in :class:`analysis.store.base.Store`; this module
supplies the connection (whose statements raise our store errors instead of
sqlite3's), the file checks, read-only opens and the few SQLite-only statements.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import quote

from analysis.config import missing_store_hint
from analysis.errors import StoreError, StoreFullError
from analysis.store.base import RUN_STATUSES, SUCCESSFUL, Store, open_store
from analysis.store.migrations import SCHEMA_VERSION, Connection

__all__ = ["SQLiteStore", "Store", "open_store", "SCHEMA_VERSION", "RUN_STATUSES", "SUCCESSFUL"]



def _check_is_sqlite(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a file that is not an SQLite database, asking SQLite itself.

    Never by reading the file's header with a file object of our own: closing any descriptor of a file drops every
    POSIX lock this process holds on it (fcntl semantics), so a second open in a process that already has the store
    open (the scan's lease keeper, a dashboard session) would silently release the first connection's locks. Another
    process then saw none of the scan's commits until it ended, and a checkpoint could race a writer.
    """
    try:  # the plain method: the connection's own execute would translate the error first
        sqlite3.Connection.execute(db, "SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc).lower() or "encrypted" in str(exc).lower():
            raise StoreError(f"{path} is not an SQLite store (refusing to touch it)") from None
        raise


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


def _connect(target: str | Path, path: Path, uri: bool = False) -> _Connection:
    db = sqlite3.connect(target, uri=uri, timeout=30, isolation_level=None, check_same_thread=False,
                         factory=_Connection)
    assert isinstance(db, _Connection)
    db.store_path = path
    return db


class SQLiteStore(Store):
    """One SQLite store file.

    ``readonly=True`` opens the file read-only and never writes it, so a read-only or
    shared file can be read.  A store of an older schema is migrated first when the
    file is writable.
    """

    backend = "sqlite"
    db: _Connection
    path: Path

    def __init__(self, location: str | os.PathLike[str], *, create: bool = True, readonly: bool = False) -> None:
        self._init_common(location, readonly)
        self.path = Path(location)
        if self.path.exists():
            if self.path.is_dir():
                raise StoreError(f"store path {self.path} is a directory")
            if not os.access(self.path, os.R_OK):
                raise StoreError(f"cannot read store {self.path}: permission denied")
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
            _check_is_sqlite(self.db, self.path)
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

    def _open_readonly(self) -> _Connection:
        """A connection that cannot write.

        A writable file is opened as usual with ``query_only`` set: readers then share
        the WAL with a running scan and leave no -wal/-shm files behind.  A file this
        process cannot write is opened ``mode=ro``, or, when its folder has no -shm to
        share either, as immutable.
        """
        writable = os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)
        if writable:
            db = self._connect_ro(str(self.path), uri=False)
            if SCHEMA_VERSION > max(self._applied_of(db), default=0):
                db.close()
                SQLiteStore(self.path, create=False).close()  # an older schema: migrate once, as a writer
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
        if SCHEMA_VERSION > max(self._applied_of(db), default=0):
            db.close()
            raise StoreError(f"store {self.path} was written by an older version and is not writable, so it "
                             "cannot be upgraded: open it once with a command that writes")
        return db

    def _connect_ro(self, target: str, uri: bool = True) -> _Connection:
        db = _connect(target, self.path, uri=uri)
        try:
            _check_is_sqlite(db, self.path)
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
    def transaction(self) -> Iterator[Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: writers queue on the file's lock).

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

    def _insert_id(self, sql: str, params: Sequence[Any]) -> int:
        return int(self.db.execute(sql, params).lastrowid or 0)

    def _rows(self, cur: Any) -> list[Any]:
        try:
            return list(cur.fetchall())
        except sqlite3.Error as exc:  # a corrupt page may show only when its rows are read
            raise _store_error(self.path, exc) from None

    def _tables(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if row[0] != "sqlite_sequence"}

    def _columns(self, table: str) -> list[str]:
        return [row[1] for row in self.db.execute(f"PRAGMA table_info({table})")]

    def _foreign_kind(self) -> str:
        return "an SQLite database"

    def _after_migration(self, db: Connection, version: int) -> None:
        db.execute(f"PRAGMA user_version = {version}")

    def id_high_water(self, table: str) -> int:
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        return int(row[0]) if row else 0

    def set_id_high_water(self, db: Connection, table: str, value: int) -> None:
        # AUTOINCREMENT keeps its high-water mark in sqlite_sequence; inserting explicit ids raised it to the
        # largest copied id, a pruned source may have handed out more.
        if db.execute("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = ?", (value, table)).rowcount == 0:
            db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, value))

    def vacuum(self) -> None:
        """Compact the file (after a prune)."""
        self._write("VACUUM")
