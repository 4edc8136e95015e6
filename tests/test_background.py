"""Dashboard scans as processes of their own (analysis/outputs/background.py), against a real simulator.

Each test starts a real detached ``python -m analysis scan`` and watches the store,
polling a real condition with a deadline.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from analysis.config import ScanConfig
from analysis.devtools.simulator import synthetic_scenario
from analysis.errors import SettingError
from analysis.outputs import background
from analysis.outputs.dashboard import resume_command
from analysis.store import open_store

from .helpers import SECRET_TOKEN

pytestmark = pytest.mark.slow
DEADLINE_S = 90


def wait_for(condition: Callable[[], object], what: str, seconds: float = DEADLINE_S) -> object:
    """Poll ``condition`` until it returns something truthy; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)  # the poll interval
    pytest.fail(f"timed out after {seconds} s waiting for {what}")


def scenario(n: int, latency_ms: float):
    sc = synthetic_scenario(n, latency_ms=latency_ms)
    sc.token = SECRET_TOKEN  # the simulator answers only this token: a finished scan proves it arrived
    return sc


def config(server, **overrides) -> ScanConfig:
    values = dict(hub_url=server.url, router_url=server.router_url, provider="hf-inference", concurrency=4,
                  timeout=5.0, retries=0, backoff=0.01, token=SECRET_TOKEN)
    values.update(overrides)
    return ScanConfig(**values)


def no_secret_in(*paths: Path) -> None:
    for path in paths:
        for suffix in ("", "-wal"):
            data = Path(f"{path}{suffix}")
            assert not data.exists() or SECRET_TOKEN.encode() not in data.read_bytes(), data


def test_a_detached_scan_finishes_in_the_store(make_sim, tmp_path):
    server = make_sim(scenario(8, latency_ms=20))
    store = tmp_path / "rca.sqlite"
    job = background.start_scan(config(server), str(store), log_dir=tmp_path / "logs")
    # Detached: a session of its own, so a signal to the app's process group does not reach it.
    assert os.getsid(job.pid) == job.pid
    # The token is in its environment, never on its command line (which `ps` shows to every local user).
    assert SECRET_TOKEN not in " ".join(job.args)
    cmdline = Path(f"/proc/{job.pid}/cmdline")
    if cmdline.exists():
        assert SECRET_TOKEN.encode() not in cmdline.read_bytes()

    code = wait_for(lambda: background.exit_code(job) is not None and str(background.exit_code(job)), "the scan")
    assert code == "0", background.log_tail(job)
    assert not background.job_alive(job)
    run_id = background.job_run(job)
    assert run_id is not None
    progress = background.scan_progress(str(store), run_id)
    assert (progress.status, progress.targets, progress.probed, progress.owner_alive) == ("ok", 8, 8, False)
    assert progress.last_saved_at is not None
    assert background.running_run(str(store)) is None and background.stopped_run(str(store)) is None
    no_secret_in(store, Path(job.log))


def test_a_killed_scan_is_seen_stopped_and_its_resume_finishes_it(make_sim, tmp_path):
    server = make_sim(scenario(30, latency_ms=150))
    store = tmp_path / "rca.sqlite"
    job = background.start_scan(config(server, concurrency=1), str(store), log_dir=tmp_path / "logs")

    def some_progress() -> background.ScanProgress | None:
        run_id = background.job_run(job)
        progress = background.scan_progress(str(store), run_id) if run_id else None
        return progress if progress and progress.probed >= 2 else None

    progress = wait_for(some_progress, "the first stored results")
    assert progress.status == "running" and progress.owner_alive and progress.targets == 30
    assert background.running_run(str(store)) == progress.run_id  # what the Scan page reattaches to

    os.killpg(job.pid, signal.SIGKILL)  # as an OOM kill or a reboot would
    wait_for(lambda: background.exit_code(job) is not None, "the killed process to be reaped")
    assert background.running_run(str(store)) is None
    assert background.stopped_run(str(store)) == progress.run_id
    assert not background.scan_progress(str(store), progress.run_id).owner_alive

    resumed = background.start_resume(progress.run_id, str(store), SECRET_TOKEN, log_dir=tmp_path / "logs")
    assert resumed.args == ("scan", "--resume", str(progress.run_id), "--store", str(store))
    assert background.command_line(resumed.args) == resume_command(progress.run_id, str(store))
    code = wait_for(lambda: background.exit_code(resumed) is not None and str(background.exit_code(resumed)),
                    "the resumed scan")
    assert code == "0", background.log_tail(resumed)
    done = background.scan_progress(str(store), progress.run_id)
    assert (done.status, done.probed, done.targets) == ("ok", 30, 30)
    with open_store(store, readonly=True) as s:
        assert len(s.runs()) == 1  # the same run, finished: no second run
    no_secret_in(store, Path(job.log), Path(resumed.log))


def test_settings_the_cli_would_refuse_start_nothing(tmp_path):
    with pytest.raises(SettingError, match="hub_url") as refused:
        background.start_scan(ScanConfig(hub_url="not a url"), str(tmp_path / "rca.sqlite"), log_dir=tmp_path)
    assert refused.value.field == "hub_url" and refused.value.exit_code == 2
    assert not (tmp_path / "rca.sqlite").exists() and list(tmp_path.iterdir()) == []


def test_scan_args_carry_every_form_setting_and_no_token():
    cfg = ScanConfig(hub_url="http://127.0.0.1:8765", router_url="http://127.0.0.1:8765/v1", provider="all",
                     source="file", catalog_file="/data/uploads/c.json", concurrency=3, timeout=2.5, retries=1,
                     max_tokens=32, backoff=0.5, route_checks=0, probe=False, token=SECRET_TOKEN)
    args = background.scan_args(cfg, "/tmp/x y/rca.sqlite")
    pairs = dict(zip(args[1::2], args[2::2]))
    assert args[0] == "scan" and args[-1] == "--no-probe"
    assert pairs["--store"] == "/tmp/x y/rca.sqlite" and pairs["--source"] == "file"
    assert pairs["--catalog-file"] == "/data/uploads/c.json" and pairs["--route-checks"] == "0"
    assert pairs["--timeout"] == "2.5" and pairs["--provider"] == "all"
    assert SECRET_TOKEN not in " ".join(args)
    assert background.command_line(args).startswith("python -m analysis scan --store '/tmp/x y/rca.sqlite'")


def test_a_scan_on_another_host_is_alive_by_its_lease_and_stopped_without_it(tmp_path):
    """One mechanism: the scope's lease (its heartbeat) says whether a scan on any host is alive."""
    store = str(tmp_path / "rca.sqlite")
    with open_store(store) as s:
        run_id = s.create_run(source="hub", provider="together", hub_url=None, router_url="http://x/v1",
                              settings={}, tool_version="t", mode="probe")
        s.db.execute("UPDATE runs SET host = 'another-host', pid = 1 WHERE id = ?", (run_id,))
        lease = s.acquire_lease("hub", "together", run_id=run_id)
        assert background.running_run(store) == run_id and background.stopped_run(store) is None
        assert background.scan_progress(store, run_id).owner_alive
        s.release_lease(lease)
    assert background.running_run(store) is None and background.stopped_run(store) == run_id
    assert not background.scan_progress(store, run_id).owner_alive
