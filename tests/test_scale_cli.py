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
