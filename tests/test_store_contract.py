"""The store contract on both backends: a real scan, every reader, overrides, claim_run, read-only opens,
resume after SIGKILL, a lost server; store locations, unsupported schemes and passwords."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from analysis.errors import (
    EXIT_RUN_LEVEL,
    EXIT_USAGE,
    StoreError,
    StoreUnavailableError,
    UnsupportedStoreError,
    UsageError,
)
from analysis.pipeline.scan import run_scan
from analysis.store import SCHEMA_VERSION, display_location, open_store, store_backend

from .helpers import PROJECT_ROOT, fast_config
from .pg_cluster import BACKENDS, PASSWORD, PASSWORD_ROLE, store_location


@pytest.fixture(params=BACKENDS)
def location(request, tmp_path) -> str:
    return store_location(request, tmp_path)


def _scan_into(location: str, sim) -> int:
    with open_store(location) as store:
        outcome = run_scan(fast_config(sim, provider="all"), store)
    return outcome.run_id


def _frames(location: str, run_id: int) -> dict[str, pd.DataFrame]:
    with open_store(location, readonly=True) as store:
        return {"findings": store.findings(run_id), "probes": store.probes(run_id), "catalog": store.catalog(run_id),
                "targets": store.targets(run_id), "runs": store.runs(), "history": store.scope_history("hub", "all"),
                "probe_times": store.probe_times(run_id)}


@pytest.mark.slow
def test_a_real_scan_reads_back_alike_on_both_backends(sim, tmp_path, postgres_server):
    """The same scan into SQLite and PostgreSQL: the same verdicts, columns and dtypes from every reader."""
    lite, pg = str(tmp_path / "rca.sqlite"), postgres_server.new_database()
    frames = {}
    for location in (lite, pg):
        run_id = _scan_into(location, sim)
        assert run_id == 1
        frames[location] = _frames(location, run_id)
    a, b = frames[lite], frames[pg]
    for name in a:
        assert list(a[name].columns) == list(b[name].columns), name
        assert a[name].dtypes.astype(str).to_dict() == b[name].dtypes.astype(str).to_dict(), name
        assert len(a[name]) == len(b[name]) > 0, name
    verdict = ["model_id", "provider", "reason", "blocked", "action", "error_signature", "carried", "alternatives"]
    pd.testing.assert_frame_equal(a["findings"][verdict], b["findings"][verdict])
    assert a["runs"].iloc[0]["status"] == b["runs"].iloc[0]["status"] == "ok"
    assert a["runs"].iloc[0]["counts"] == b["runs"].iloc[0]["counts"]


def test_stored_cells_read_back_identical(location, tmp_path):
    """What SQLite does with a cell, PostgreSQL does: NaN is NULL, bools are 0/1, text sorts byte-wise."""
    ids = ["a/b-c", "a/B", "a/b_c", "a/bc", "A/z", "a/b c", "a/é"]
    findings = pd.DataFrame({
        "model_id": ids, "provider": "p", "reason": "ok", "blocked": [True, False] * 3 + [True],
        "http_status": [200.0, math.nan, 404.0, 200.0, math.nan, 500.0, 200.0],
        "latency_ms": [1.25, 2.5, math.nan, 0.1, 1e-3, 123456.789, 7.0],
        "in_router_list": [True, None, False, True, True, None, False],
        "alternatives": [["x:q"], [], ["y:r", "z:s"], [], [], [], []],
        "message": ["NUL-free text", None, "quote ' and ? and %s and %%", "", "ünï", "x", "y"],
    })
    with open_store(location) as store:
        run_id = store.create_run(source="hub", provider="p", hub_url=None, router_url=None, settings={"k": [1, 2]})
        store.save_findings(run_id, findings)
        stored = store.findings(run_id)
        run = store.get_run(run_id)
    assert list(stored["model_id"]) == sorted(ids)  # byte order, whatever the database's locale
    by_id = stored.set_index("model_id")
    assert by_id.loc["a/B", "http_status"] is None or math.isnan(by_id.loc["a/B", "http_status"])
    assert by_id.loc["a/b_c", "http_status"] == 404 and by_id.loc["a/bc", "latency_ms"] == 0.1
    assert by_id.loc["a/b_c", "message"] == "quote ' and ? and %s and %%"
    assert by_id.loc["a/b_c", "alternatives"] == ["y:r", "z:s"] and by_id.loc["a/B", "in_router_list"] is None
    assert by_id["blocked"].dtype == bool and by_id.loc["a/b-c", "blocked"]
    assert run.settings == {"k": [1, 2]} and run.status == "running"


def test_overrides_prune_and_vacuum(location):
    with open_store(location) as store:
        first = store.add_override(model_id="m/1", provider="", action="allow", reason="r", author="a",
                                   expires_at=None)
        second = store.add_override(model_id="m/2", provider="p", action="block", reason="r", author="a",
                                    expires_at="2099-01-01")
        assert (first, second) == (1, 2)
        assert store.remove_override(first) and not store.remove_override(first)
        assert list(store.overrides()["id"]) == [2]
        ids = [store.create_run(source="hub", provider="p", hub_url=None, router_url=None, settings={})
               for _ in range(4)]
        assert ids == [1, 2, 3, 4]
        assert store.prune(keep=2) == [1, 2]
        store.vacuum()
        assert list(store.runs()["id"]) == [3, 4]
        # a pruned id is never handed out again
        assert store.create_run(source="hub", provider="p", hub_url=None, router_url=None, settings={}) == 5
        with pytest.raises(UsageError, match="no run 1 in"):
            store.get_run(1)


def test_latest_and_previous_runs_and_stale_marks(location):
    with open_store(location) as store:
        a = store.create_run(source="hub", provider="p", hub_url=None, router_url=None, settings={})
        store.finish_run(a, "ok")
        b = store.create_run(source="hub", provider="p", hub_url=None, router_url=None, settings={})
        store.finish_run(b, "failed", failure_reason="auth_error")
        c = store.create_run(source="hub", provider="p", hub_url=None, router_url=None, settings={})
        store.finish_run(c, "partial")
        assert store.latest_run_id() == c and store.latest_run_id("ok") == a
        assert store.latest_run_id(None, before=c) == b and store.previous_ok_run(c) == a
        assert store.latest_run_id(source="router") is None
        assert store.mark_stale_runs() == []  # nothing running


def test_claim_run_lets_exactly_one_process_resume(location):
    with open_store(location) as one, open_store(location) as two:
        run_id = one.create_run(source="hub", provider="p", hub_url=None, router_url=None, settings={})
        assert not one.claim_run(run_id)  # running, not incomplete
        one.set_run_status(run_id, "incomplete")
        assert [one.claim_run(run_id), two.claim_run(run_id)] == [True, False]
        assert two.get_run(run_id).status == "running" and two.get_run(run_id).pid == os.getpid()


def test_readonly_opens_never_write(location):
    with open_store(location) as store:
        store.create_run(source="hub", provider="p", hub_url=None, router_url=None, settings={})
    with open_store(location, readonly=True) as reader:
        assert reader.get_run(1).status == "running"
        with pytest.raises(StoreError, match="read-only"):
            reader.add_override(model_id="m", provider="", action="allow", reason="r", author="a", expires_at=None)
        with pytest.raises(StoreError, match="read-only"):
            reader.set_run_status(1, "ok")
    with open_store(location, readonly=True) as reader:
        assert reader.get_run(1).status == "running" and reader.overrides().empty


def test_postgres_readonly_open_never_migrates(postgres_server):
    url = postgres_server.new_database()
    with open_store(url) as store:  # make it look like a store of the previous version
        store.db.execute("DROP TABLE leases")
        store.db.execute("ALTER TABLE runs DROP COLUMN prompt_tokens, DROP COLUMN completion_tokens, "
                         "DROP COLUMN spent_usd, DROP COLUMN unpriced_answers")
        store.db.execute("DELETE FROM schema_migrations WHERE version >= 6")
    with pytest.raises(StoreError, match="older version"):
        open_store(url, readonly=True)
    with open_store(url) as writer:  # a writer migrates
        assert writer.schema_version() == SCHEMA_VERSION and "leases" in writer._tables()


_VICTIM = textwrap.dedent("""
    import sys
    from analysis.pipeline.probe import Attempt, ProbeResult
    from analysis.store import open_store

    store = open_store(sys.argv[1])
    run_id = store.create_run(source="hub", provider="p", hub_url=None, router_url=None, settings={})
    attempt = Attempt(1, "2026-01-01T00:00:00Z", 1.0, 200, "chat")
    store.save_probes(run_id, [ProbeResult(f"m/{i}", "p", f"m/{i}:p", "http://x", "primary", 200, "chat", None,
                                           None, 1.0, 1, [attempt], "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z")
                               for i in range(5)])
    print(run_id, flush=True)
    sys.stdin.read()  # held open (connection and all) until killed
""")


def test_a_killed_writer_leaves_its_run_resumable(location):
    """SIGKILL mid-run: the committed probes stay, the next open marks the run incomplete, one resume claims it."""
    proc = subprocess.Popen([sys.executable, "-c", _VICTIM, location], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    try:
        line = proc.stdout.readline()  # blocks until the child has committed its probes
        assert line.strip() == "1", proc.stderr.read()
        with open_store(location, readonly=True) as reader:
            assert reader.get_run(1).status == "running"  # its owner is alive
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    with open_store(location) as store:  # a writer's open notices the dead owner
        assert store.get_run(1).status == "incomplete"
        assert store.probed_keys(1) == {(f"m/{i}", "p") for i in range(5)}
        assert store.claim_run(1) and not store.claim_run(1)


def test_a_lost_server_connection_is_an_outage(postgres_server):
    url = postgres_server.new_database()
    with open_store(url) as store:
        store.create_run(source="hub", provider="p", hub_url=None, router_url=None, settings={})
        pid = store.db.execute("SELECT pg_backend_pid()").fetchone()[0]
        postgres_server.admin(f"SELECT pg_terminate_backend({pid})")
        with pytest.raises(StoreUnavailableError, match="resume") as caught:
            store.set_run_status(1, "ok")
    assert caught.value.exit_code == EXIT_RUN_LEVEL


# --------------------------------------------------------------------------- locations and passwords


@pytest.mark.parametrize("location, shown", [
    ("rca.sqlite", "rca.sqlite"),
    ("/data/team store.sqlite", "/data/team store.sqlite"),
    ("postgresql://rca@db.example:5432/rca", "postgresql://rca@db.example:5432/rca"),
    ("postgresql://rca:s3cr%40t@db.example/rca", "postgresql://rca@db.example/rca"),
    ("postgres://rca:s3cret@db.example/rca?sslmode=require&password=s3cret",
     "postgres://rca@db.example/rca?sslmode=require"),
    ("postgresql:///rca?host=/var/run/postgresql", "postgresql:///rca?host=/var/run/postgresql"),
])
def test_display_location_keeps_the_store_and_drops_the_password(location, shown):
    assert display_location(location) == shown
    assert "s3c" not in display_location(location)


@pytest.mark.parametrize("url", ["mysql://u:s3cret@host/db", "sqlite:///x.db", "file:///tmp/x.sqlite",
                                 "https://u:s3cret@example.org/store"])
def test_an_unsupported_scheme_is_a_usage_error_and_creates_nothing(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnsupportedStoreError, match="is not supported") as caught:
        open_store(url)
    assert caught.value.exit_code == EXIT_USAGE and "s3cret" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_backends_by_location():
    assert store_backend("x/rca.sqlite") == "sqlite" and store_backend("postgresql://h/d") == "postgresql"
    assert store_backend("POSTGRES://h/d") == "postgresql"


def test_a_password_never_shows(postgres_server):
    wrong = postgres_server.url("postgres", PASSWORD_ROLE, "Not-The-Password-9")
    with pytest.raises(StoreError) as caught:
        open_store(wrong)
    assert "Not-The-Password-9" not in str(caught.value) and "password authentication failed" in str(caught.value)
    assert caught.value.exit_code == EXIT_USAGE

    url = postgres_server.new_database(owner=PASSWORD_ROLE).replace(f"{PASSWORD_ROLE}@",
                                                                    f"{PASSWORD_ROLE}:{PASSWORD}@")
    with open_store(url) as store:
        assert PASSWORD not in store.display and PASSWORD not in str(store.path)
        assert store.location == url  # kept for reopening only
        with pytest.raises(UsageError) as missing:
            store.get_run(42)
    assert PASSWORD not in str(missing.value) and PASSWORD_ROLE in str(missing.value)

    closed = f"postgresql://{PASSWORD_ROLE}:{PASSWORD}@127.0.0.1:1/nothing"
    with pytest.raises(StoreError) as refused:
        open_store(closed)
    assert PASSWORD not in str(refused.value) and "cannot connect" in str(refused.value)
