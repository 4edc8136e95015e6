"""Crash safety: SIGKILL and resume, Ctrl-C, and a reader alongside a writing scan."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.devtools.simulator import synthetic_scenario
from analysis.store import open_store

from .helpers import run_cli, sim_stats

N_MODELS = 240


def _start_scan(server, store, *extra):
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    return subprocess.Popen(
        [sys.executable, "-m", "analysis", "scan", "--hub-url", server.url, "--router-url", server.router_url,
         "--store", str(store), "--concurrency", "4", "--batch-size", "10", "--route-checks", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=Path(store).parent)


def _stored_probes(store, run_id) -> int:
    # A plain read-only connection, like any other reader of the store.
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT COUNT(*) FROM probes WHERE run_id = ?", (run_id,)).fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # the tables do not exist yet
    finally:
        db.close()


def _wait_for_probes(store, at_least, proc, run_id=1, deadline_s=30.0) -> int:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"scan ended early: {proc.stderr.read()}")
        if store.exists() and (count := _stored_probes(store, run_id)) >= at_least:
            return count
        time.sleep(0.02)  # polling for an observable state, with a deadline
    pytest.fail(f"fewer than {at_least} probes stored after {deadline_s} s")


@pytest.fixture
def slow_sim(make_sim):
    return make_sim(synthetic_scenario(N_MODELS, 40))


def test_sigkill_then_resume_loses_nothing_and_probes_nothing_twice(slow_sim, tmp_path):
    store = tmp_path / "rca.sqlite"
    proc = _start_scan(slow_sim, store)
    _wait_for_probes(store, 40, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL

    with open_store(store) as s:  # opening notices the dead owner
        run = s.get_run(1)
        assert run.status == "incomplete"
        before = s.probed_keys(1)
        assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert len(s.targets(1)) == N_MODELS
    assert 40 <= len(before) < N_MODELS
    attempts_before = dict(sim_stats(slow_sim)["attempts"])

    resumed = run_cli("scan", "--resume", "--store", str(store))
    assert resumed.returncode == 0, resumed.stderr
    with open_store(store) as s:
        run = s.get_run(1)
        probes = s.probes(1)
        findings = s.findings(1)
    assert run.status == "ok" and len(findings) == N_MODELS
    assert len(probes) == N_MODELS == probes[["model_id", "provider", "kind"]].drop_duplicates().shape[0]
    attempts = sim_stats(slow_sim)["attempts"]
    for model_id, provider in before:  # stored before the kill: never sent again
        assert attempts[f"{model_id}:{provider}"] == attempts_before[f"{model_id}:{provider}"] == 1
    assert set(findings["reason"]) == {"ok"}


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(slow_sim, tmp_path):
    store = tmp_path / "rca.sqlite"
    proc = _start_scan(slow_sim, store)
    _wait_for_probes(store, 20, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    assert "--resume 1" in stderr and "Traceback" not in stderr
    with open_store(store) as s:
        assert s.get_run(1).status == "incomplete"
        flushed = len(s.probed_keys(1))
    assert flushed >= 20
    done = run_cli("scan", "--resume", "1", "--store", str(store))
    assert done.returncode == 0, done.stderr
    with open_store(store) as s:
        assert len(s.findings(1)) == N_MODELS


def test_resume_refuses_finished_and_unknown_runs(sim, tmp_path):
    store = tmp_path / "rca.sqlite"
    run_cli("scan", "--hub-url", sim.url, "--router-url", sim.router_url, "--store", str(store), "--timeout", "1",
            "--backoff", "0.01")
    finished = run_cli("scan", "--resume", "1", "--store", str(store))
    assert finished.returncode == 2 and "not incomplete" in finished.stderr
    nothing = run_cli("scan", "--resume", "--store", str(store))
    assert nothing.returncode == 2 and "no incomplete run" in nothing.stderr


@pytest.mark.slow
def test_readers_work_while_a_scan_writes(make_sim, sim, tmp_path):
    store = tmp_path / "rca.sqlite"
    # a finished run to export while the next one is written
    first = run_cli("scan", "--hub-url", sim.url, "--router-url", sim.router_url, "--store", str(store),
                    "--timeout", "1", "--backoff", "0.01")
    assert first.returncode == 0
    slower = make_sim(synthetic_scenario(100, 150))  # ~4 s at concurrency 4: reads happen while it writes
    proc = _start_scan(slower, store)
    statuses, lines, probe_counts = [], [], []
    try:
        _wait_for_probes(store, 10, proc, run_id=2)
        for _ in range(2):
            with open_store(store, create=False) as reader:
                statuses.append(reader.get_run(2).status)
                probe_counts.append(len(reader.probes(2)))
            exported = run_cli("export", "findings", "--store", str(store), "--run", "1")
            assert exported.returncode == 0, exported.stderr
            lines.append(exported.stdout.count("\n"))
    finally:
        proc.wait(60)
    assert proc.returncode == 0
    assert statuses[0] == "running" and probe_counts[0] >= 10
    assert probe_counts[1] >= probe_counts[0]
    assert len(set(lines)) == 1 and lines[0] > 1
