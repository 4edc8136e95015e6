"""The scale knobs of scan through the CLI: --rate pins, the default ceiling, and what a run stores of them."""

from __future__ import annotations

import pytest

from analysis.config import ScanConfig
from analysis.devtools.simulator import synthetic_scenario
from analysis.store import open_store

from .helpers import FAST_FLAGS, run_cli


@pytest.mark.parametrize("spec", ["together", "together=", "together=abc", "=5", "together=-1", "together=inf"])
def test_a_bad_rate_pin_exits_2_and_creates_nothing(tmp_path, spec):
    store = tmp_path / "rca.sqlite"
    result = run_cli("scan", "--rate", spec, "--store", str(store), "--router-url", "http://127.0.0.1:9/v1")
    assert result.returncode == 2 and "--rate" in result.stderr
    assert not store.exists()


def test_a_rate_pin_is_used_and_stored_without_changing_the_verdicts(make_sim, tmp_path):
    server = make_sim(synthetic_scenario(6, 1))
    store = tmp_path / "rca.sqlite"
    result = run_cli("scan", "--hub-url", server.url, "--router-url", server.router_url, "--store", str(store),
                     "--rate", "hf-inference=200", *FAST_FLAGS)
    assert result.returncode == 0, result.stderr
    with open_store(store, readonly=True) as db:
        run = db.get_run(1)
        assert run.settings["rate_pins"] == {"hf-inference": 200.0}
        assert run.settings["concurrency"] is None  # automatic: recorded as such, resolved per scope
        assert set(db.findings(1)["reason"]) == {"ok"}


def test_the_default_ceiling_rises_with_the_providers_in_scope():
    assert ScanConfig().ceiling(1) == 8 and ScanConfig().ceiling(5) == 40 and ScanConfig().ceiling(100) == 256
    assert ScanConfig(concurrency=3).ceiling(5) == 3  # --concurrency stays the ceiling when given
    assert ScanConfig().probe_settings(4).concurrency == 32


def test_a_reader_that_goes_away_is_not_an_error(sample_store):
    """`export ... | head -1`: the broken pipe ends the command quietly with exit 0, not click's 1."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "analysis", "export", "findings", "--store", str(sample_store)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline()  # one line, then the reader goes away
    proc.stdout.close()
    assert proc.wait(timeout=60) == 0
    assert proc.stderr is not None and b"Traceback" not in proc.stderr.read()


def test_resume_names_the_flags_it_ignores_and_refuses_a_zero_budget(make_sim, tmp_path):
    server = make_sim(synthetic_scenario(4, 1))
    store = tmp_path / "rca.sqlite"
    assert run_cli("scan", "--hub-url", server.url, "--router-url", server.router_url, "--store", str(store),
                   *FAST_FLAGS).returncode == 0
    ignored = run_cli("scan", "--resume", "1", "--store", str(store), "--format", "json", "--max-age", "1h")
    assert "ignored with --resume" in ignored.stderr and "--format," in ignored.stderr
    assert "--max-age" in ignored.stderr and "--format-" not in ignored.stderr
    zero = run_cli("scan", "--resume", "1", "--store", str(store), "--budget-usd", "0")
    assert zero.returncode == 2 and "--budget-usd must be a finite amount > 0" in zero.stderr
