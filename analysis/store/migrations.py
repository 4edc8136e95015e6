"""The store's schema as one ordered list of migrations, shared by every backend.

Each migration is a function of a connection, written in SQLite's dialect; the
PostgreSQL connection translates the few differences as statements pass through it
(``?`` placeholders, ``AUTOINCREMENT`` ids, column types: see
:mod:`analysis.store.postgres`).  Each applied version is recorded in
``schema_migrations``.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Connection", "script"]


class Connection(Protocol):
    """What the store needs of a connection: sqlite3's, or the PostgreSQL adapter that speaks like it."""

    def execute(self, sql: str, parameters: Any = (), /) -> Any: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...

    def close(self) -> None: ...


def script(db: Connection, sql: str) -> None:
    """Run ``;``-separated statements one by one (sqlite3's executescript() would COMMIT first and break the
    migration's transaction)."""
    for statement in sql.split(";"):
        if statement.strip():
            db.execute(statement)


def _m001_initial(db: Connection) -> None:
    script(db, """
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


def _m002_history_and_modes(db: Connection) -> None:
    script(db, """
        ALTER TABLE findings ADD COLUMN first_failed_at TEXT;
        ALTER TABLE findings ADD COLUMN last_ok_at TEXT;
        ALTER TABLE findings ADD COLUMN consecutive_failures INTEGER;
        ALTER TABLE findings ADD COLUMN flaps INTEGER;
        ALTER TABLE findings ADD COLUMN alternatives_json TEXT;
        ALTER TABLE runs ADD COLUMN mode TEXT NOT NULL DEFAULT 'probe';
        ALTER TABLE runs ADD COLUMN canaries_json TEXT
    """)


def _m003_run_owner(db: Connection) -> None:
    script(db, """
        ALTER TABLE runs ADD COLUMN pid INTEGER;
        ALTER TABLE runs ADD COLUMN host TEXT
    """)


def _m004_taxonomy_v2(db: Connection) -> None:
    # Runs before this migration were judged by taxonomy version 1.
    script(db, """
        ALTER TABLE runs ADD COLUMN taxonomy_version INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE runs ADD COLUMN faulted_json TEXT;
        ALTER TABLE probes ADD COLUMN settings TEXT NOT NULL DEFAULT '';
        ALTER TABLE findings ADD COLUMN working_settings TEXT;
        ALTER TABLE findings ADD COLUMN error_signature TEXT;
        ALTER TABLE findings ADD COLUMN carried INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX findings_signature ON findings (run_id, error_signature)
    """)


def _m005_overrides(db: Connection) -> None:
    script(db, """
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


def _m006_leases(db: Connection) -> None:
    # One row per running scan of a scope (see analysis.store.lease).  ``holder`` is a random token, so a
    # reused pid can never renew or release another process's lease; no foreign key to runs: a lease is taken
    # before its run exists, and outlives nothing.
    script(db, """
        CREATE TABLE leases (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            source TEXT NOT NULL,
            providers TEXT NOT NULL,
            run_id INTEGER,
            holder TEXT NOT NULL UNIQUE,
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            started_at TEXT NOT NULL,
            heartbeat_at TEXT NOT NULL,
            expires_at TEXT NOT NULL
        );
        CREATE INDEX leases_source ON leases (source)
    """)


def _m007_usage_and_spend(db: Connection) -> None:
    # What a run's answers cost: the tokens the router reported and the estimated USD, summed over the
    # invocations that worked on the run (a resume adds its own).
    script(db, """
        ALTER TABLE runs ADD COLUMN prompt_tokens INTEGER;
        ALTER TABLE runs ADD COLUMN completion_tokens INTEGER;
        ALTER TABLE runs ADD COLUMN spent_usd REAL;
        ALTER TABLE runs ADD COLUMN unpriced_answers INTEGER
    """)


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "initial schema", _m001_initial),
    (2, "history columns, alternatives, run mode and canaries", _m002_history_and_modes),
    (3, "process that owns a running run", _m003_run_owner),
    (4, "taxonomy v2: partial runs, request experiments, error signatures, carried rows", _m004_taxonomy_v2),
    (5, "operator overrides of the blocklist", _m005_overrides),
    (6, "leases: one scan at a time per scope", _m006_leases),
    (7, "token usage and estimated spend of a run", _m007_usage_and_spend),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
