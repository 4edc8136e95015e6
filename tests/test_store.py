"""The store on both backends (SQLite and PostgreSQL): migrations, refusals, readers as DataFrames; SQLite's
file checks and WAL."""

from __future__ import annotations

import sqlite3

import pandas as pd
import psycopg
import pytest

from analysis.errors import StoreError
from analysis.pipeline.catalog import normalise_hub_models
from analysis.pipeline.probe import Attempt, ProbeResult
from analysis.pipeline.targets import Target
from analysis.store import SCHEMA_VERSION, open_store

from .pg_cluster import BACKENDS, store_location

# A duplicate row is our bug on either backend (exit 4), never a store error.
INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.IntegrityError)


@pytest.fixture(params=BACKENDS)
def location(request, tmp_path) -> str:
    return store_location(request, tmp_path)


def _result(model_id: str, status: int = 200, outcome: str = "chat") -> ProbeResult:
    attempt = Attempt(1, "2026-01-01T00:00:00Z", 10.0, status, outcome)
    return ProbeResult(model_id, "p", f"{model_id}:p", "http://x/v1/chat/completions", "primary", status, outcome,
                       None, None, 10.0, 1, [attempt], "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z")


def test_new_sqlite_store_is_wal(store_path):
    with open_store(store_path) as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_new_store_is_migrated(location):
    with open_store(location) as store:
        rows = store.db.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
        assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
        assert store.schema_version() == SCHEMA_VERSION


def test_reopening_applies_nothing_twice(location):
    open_store(location).close()
    with open_store(location) as store:
        count = store.db.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0]
    assert count == SCHEMA_VERSION


def test_newer_schema_is_refused_and_untouched(location):
    with open_store(location) as store:
        store.db.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', 'x')")
    with pytest.raises(StoreError, match="newer"):
        open_store(location)
    with pytest.raises(StoreError, match="newer"):
        open_store(location, readonly=True)


def test_newer_sqlite_file_is_untouched(store_path):
    open_store(store_path).close()
    db = sqlite3.connect(store_path)
    db.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', 'x')")
    db.commit()
    db.close()
    before = store_path.read_bytes()
    with pytest.raises(StoreError, match="newer"):
        open_store(store_path)
    assert store_path.read_bytes() == before


def test_not_sqlite_is_refused_and_untouched(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("these are my notes, not a database\n")
    with pytest.raises(StoreError, match="not an SQLite"):
        open_store(path)
    assert path.read_text() == "these are my notes, not a database\n"


def test_missing_store_for_readers(tmp_path):
    with pytest.raises(StoreError, match="no store"):
        open_store(tmp_path / "absent.sqlite", create=False)
    assert not (tmp_path / "absent.sqlite").exists()


def test_empty_database_is_no_store_for_readers(location):
    for kwargs in ({"create": False}, {"readonly": True}):
        with pytest.raises(StoreError, match="no store"):
            open_store(location, **kwargs)
    with open_store(location) as store:  # and nothing was created by those attempts
        assert store.runs().empty


def test_run_lifecycle_and_readers(location):
    catalog = normalise_hub_models([{"id": "a/x", "pipeline_tag": "text-generation", "tags": ["t"],
                                     "inferenceProviderMapping": [{"provider": "p", "status": "live",
                                                                   "task": "conversational"}]}])
    with open_store(location) as store:
        run_id = store.create_run(source="hub", provider="p", hub_url="h", router_url="r", settings={"a": 1})
        store.save_catalog(run_id, catalog)
        store.save_targets(run_id, [Target("a/x", "p", "a/x:p")])
        store.save_probes(run_id, [_result("a/x")])
        assert store.probed_keys(run_id) == {("a/x", "p")}
        store.finish_run(run_id, "ok", counts={"ok": 1}, n_ok=1, n_blocked=0)
        runs = store.runs()
        assert isinstance(runs, pd.DataFrame) and runs.iloc[0]["status"] == "ok"
        assert runs.iloc[0]["counts"] == {"ok": 1} and runs.iloc[0]["duration_s"] >= 0
        cat = store.catalog(run_id)
        assert cat.iloc[0]["mapping"] == {"p": {"status": "live", "task": "conversational", "providerId": ""}}
        assert cat.iloc[0]["tags"] == ["t"]
        probes = store.probes(run_id)
        assert probes.iloc[0]["attempt_log"][0]["http_status"] == 200
        assert store.latest_run_id("ok") == run_id
        assert store.previous_ok_run(run_id) is None


def test_probe_rows_are_unique(location):
    with open_store(location) as store:
        run_id = store.create_run(source="hub", provider="p", hub_url="h", router_url="r", settings={})
        store.save_probes(run_id, [_result("a/x")])
        with pytest.raises(INTEGRITY_ERRORS):
            store.save_probes(run_id, [_result("a/x"), _result("a/y")])
        # the failed batch rolled back as a whole
        assert store.probed_keys(run_id) == {("a/x", "p")}


class _Rollback(Exception):
    pass


def test_concurrent_reader_sees_committed_batches(location):
    with open_store(location) as writer, open_store(location, create=False) as reader:
        run_id = writer.create_run(source="hub", provider="p", hub_url="h", router_url="r", settings={})
        writer.save_probes(run_id, [_result(f"a/{i}") for i in range(10)])
        assert len(reader.probes(run_id)) == 10
        with pytest.raises(_Rollback):
            with writer.transaction() as db:
                db.execute("DELETE FROM probes")
                # an open write transaction does not block the reader, which sees the last commit
                assert len(reader.probes(run_id)) == 10
                raise _Rollback
        assert len(reader.probes(run_id)) == 10


def test_a_second_open_in_one_process_keeps_the_first_connections_locks(tmp_path):
    """Closing any descriptor of a file drops the process's POSIX locks on it: a second open must not read the file
    through one of its own, or another process stops seeing the first connection's commits (and a checkpoint may
    race its writes). Here the reader is a real second process."""
    import subprocess
    import sys

    from analysis.store import open_store

    path = tmp_path / "rca.sqlite"
    reader = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
              "print(db.execute('SELECT COUNT(*) FROM runs').fetchone()[0])")
    with open_store(path) as writer:
        with open_store(path) as second, open_store(path, readonly=True) as third:  # a lease keeper, a dashboard
            for number in (1, 2):
                writer.create_run(source="hub", provider="p", hub_url=None, router_url="http://x/v1", settings={},
                                  tool_version="t", mode="probe", taxonomy_version=2)
                seen = subprocess.run([sys.executable, "-c", reader, str(path)], capture_output=True, text=True,
                                      check=True).stdout.strip()
                assert seen == str(number)
            assert len(second.runs()) == len(third.runs()) == 2


def test_the_change_marker_moves_with_every_kind_of_commit(tmp_path):
    """The dashboard's cache key for a database store: an override swapped, a status changed, a run finished."""
    from analysis.store import open_store

    with open_store(tmp_path / "rca.sqlite") as store:
        run = store.create_run(source="hub", provider="p", hub_url=None, router_url="http://x/v1", settings={},
                               tool_version="t", mode="probe")
        seen = {store.change_marker()}
        first = store.add_override(model_id="a/b", provider="", action="block", reason="r", author="me",
                                   expires_at=None)
        seen.add(store.change_marker())
        store.remove_override(first)
        store.add_override(model_id="c/d", provider="", action="allow", reason="r", author="me", expires_at=None)
        seen.add(store.change_marker())  # one removed, one added: same count, still a new marker
        store.set_run_status(run, "incomplete")
        seen.add(store.change_marker())
        store.finish_run(run, "partial", n_probed=3)
        seen.add(store.change_marker())
    assert len(seen) == 5
