"""Team scale through the CLI: a PostgreSQL store for every command, one scan at a time per scope, store copy."""

from __future__ import annotations

import os
import socket

import pytest

from analysis.devtools.simulator import synthetic_scenario
from analysis.store import hold_lease, open_store

from .helpers import FAST_FLAGS, csv_rows, run_cli, sim_stats


def _scan(server, store: str, *extra: str):
    return run_cli("scan", "--hub-url", server.url, "--router-url", server.router_url, "--store", store,
                   *FAST_FLAGS, *extra)


def test_a_second_scan_of_the_same_scope_exits_3_naming_the_holder_and_a_disjoint_one_runs(make_sim, tmp_path):
    server = make_sim(synthetic_scenario(6, 1))
    store = str(tmp_path / "rca.sqlite")
    assert _scan(server, store).returncode == 0
    before = sim_stats(server)["chat_requests"]
    with hold_lease(store, "hub", "hf-inference"):  # a live scan of the scope (this process holds it)
        busy = _scan(server, store)
        assert busy.returncode == 3
        assert "a scan of hf-inference" in busy.stderr and f"pid {os.getpid()}" in busy.stderr
        assert socket.gethostname() in busy.stderr
        assert sim_stats(server)["chat_requests"] == before  # it sent nothing
        waited = _scan(server, store, "--wait", "0.3")  # waits for the holder, then gives up
        assert waited.returncode == 3
        # "all" overlaps every provider: refused too; another provider is another scope
        assert _scan(server, store, "--provider", "all").returncode == 3
        other = _scan(server, store, "--provider", "together")
        assert other.returncode != 3 or "a scan of" not in other.stderr
    with open_store(store, readonly=True) as db:
        assert list(db.runs()["status"])[:1] == ["ok"] and len(db.runs()) == 2  # the refused ones made no run
    assert _scan(server, store).returncode == 0  # released: the next scan runs


def test_every_command_works_on_postgresql_and_store_copy_moves_it(make_sim, tmp_path, postgres_server):
    server = make_sim(synthetic_scenario(6, 1))
    url = postgres_server.new_database()
    assert _scan(server, url).returncode == 0
    blocklist = run_cli("export", "findings", "--store", url)
    assert blocklist.returncode == 0 and len(csv_rows(blocklist.stdout)) == 6
    copy = str(tmp_path / "copy.sqlite")
    moved = run_cli("store", "copy", "--from", url, "--to", copy)
    assert moved.returncode == 0, moved.stderr
    assert run_cli("export", "findings", "--store", copy).stdout == blocklist.stdout
    again = run_cli("store", "copy", "--from", url, "--to", copy)
    assert again.returncode == 2  # a target that holds runs is refused
    env_store = run_cli("export", "findings", env={"RCA_STORE": url})
    assert env_store.returncode == 0 and env_store.stdout == blocklist.stdout


def test_a_store_password_is_never_printed(make_sim, postgres_server):
    role = f"rca_pw_{os.getpid()}"
    postgres_server.admin(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-s3cret-value'")
    url = postgres_server.new_database(owner=role).replace(f"{role}@", f"{role}:pw-s3cret-value@")
    server = make_sim(synthetic_scenario(4, 1))
    result = _scan(server, url)
    assert result.returncode == 0, result.stderr
    assert "pw-s3cret-value" not in result.stdout + result.stderr
    assert f"--store postgresql://{role}@" in result.stdout  # the hint still names the store
    with open_store(url, readonly=True) as db:
        assert "pw-s3cret-value" not in str(db.get_run(1).settings)


@pytest.mark.parametrize("argv", [["store", "copy", "--from", "x.sqlite"], ["store", "copy", "--to", "y.sqlite"]])
def test_store_copy_needs_both_ends(argv):
    assert run_cli(*argv).returncode == 2


def test_a_scan_that_lost_its_lease_stops_incomplete_with_exit_3(make_sim, tmp_path):
    """Another scan took the scope over after this one's heartbeat stalled: this one stops instead of writing on."""
    from analysis.cli import CliObserver
    from analysis.errors import LeaseLostError
    from analysis.pipeline.scan import run_scan

    from .helpers import fast_config

    server = make_sim(synthetic_scenario(12, 1))
    observer = CliObserver(quiet=True)

    def taken_over() -> None:
        raise LeaseLostError("the lease of hf-inference (hub) was taken over by another scan")

    observer.lease_check = taken_over
    with open_store(tmp_path / "rca.sqlite") as store:
        with pytest.raises(LeaseLostError) as lost:
            run_scan(fast_config(server), store, observer)
        assert lost.value.exit_code == 3
        run = store.get_run(1)
    assert run.status == "incomplete"  # resumable, and no verdict written from half a scope
