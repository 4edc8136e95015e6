"""The built-in offline sample: scans of the default simulator scenario.

It replays the seed incident the right way round:

1. the gateway's ``hf-inference`` catalog against the retired
   ``api-inference`` endpoint: a run-level ``endpoint_error`` (410) that blocks
   nothing;
2. the same catalog through the router with bare model ids, as that gateway
   called them: ``katanemo/Arch-Router-1.5B`` is refused, the route check finds
   ``katanemo/Arch-Router-1.5B:hf-inference`` working: ``route_mismatch``;
3. and 4. the whole real provider table (``--provider all``) in two phases of
   the scenario, so the sample has history (recoveries, changed reasons), with
   ``probe_error`` models that work with other request settings;
5. the same scope from an account with every provider switched off in its
   settings: a run-level ``endpoint_error`` that names the settings and blocks
   nothing.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx

from analysis import config
from analysis.devtools.simulator import Scenario, SimulatorServer, default_scenario
from analysis.outputs.export import Provenance, blocklist_bytes
from analysis.pipeline.scan import ScanConfig, ScanObserver, ScanOutcome, run_scan
from analysis.store import Store

__all__ = ["SampleResult", "build_sample_store", "ensure_sample_store", "sample_config"]

SAMPLE_PROVIDER = "all"


@dataclass
class SampleResult:
    store_path: Path
    blocklist_path: Path | None
    outcomes: list[tuple[str, ScanOutcome]]


def sample_config(hub_url: str, router_url: str, provider: str = SAMPLE_PROVIDER, route: str = "suffix") -> ScanConfig:
    """Scan settings for the sample: fast timeouts, because the simulator answers in milliseconds."""
    return ScanConfig(hub_url=hub_url, router_url=router_url, provider=provider, route=route, concurrency=16,
                      timeout=1.0, retries=2, backoff=0.05, retry_after_cap=1.0)


def build_sample_store(store_path: str | os.PathLike[str] | None = None,
                       blocklist_path: str | os.PathLike[str] | None = None,
                       scenario: Scenario | None = None,
                       observer: ScanObserver | None = None,
                       on_step: Callable[[str], None] | None = None) -> SampleResult:
    """Start the simulator, run the sample scans and write the store (and blocklist CSV).

    The store is built in a temporary file and moved into place at the end, so a
    reader never sees a half-built sample.
    """
    store_path = Path(store_path) if store_path is not None else config.sample_store()
    store_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".sample-", suffix=".sqlite", dir=store_path.parent)
    os.close(fd)
    os.unlink(tmp_name)
    outcomes: list[tuple[str, ScanOutcome]] = []
    step = on_step or (lambda text: None)
    try:
        with SimulatorServer(scenario or default_scenario()) as sim, Store(tmp_name) as store:
            httpx.post(f"{sim.url}/_sim/phase", params={"n": 0})
            step("scan 1: hf-inference through the retired api-inference endpoint (the seed incident's mistake)")
            outcomes.append(("hf-inference, retired endpoint", run_scan(
                sample_config(sim.url, f"{sim.url}/retired/v1", "hf-inference"), store, observer)))
            step("scan 2: hf-inference through the router with bare model ids, as the seed's gateway called them")
            outcomes.append(("hf-inference, bare ids", run_scan(
                sample_config(sim.url, sim.router_url, "hf-inference", route="bare"), store, observer)))
            step("scan 3: every provider through the router, scenario phase 0")
            outcomes.append(("all providers, phase 0", run_scan(sample_config(sim.url, sim.router_url), store,
                                                                observer)))
            httpx.post(f"{sim.url}/_sim/phase", params={"n": 1})
            step("scan 4: every provider through the router, scenario phase 1")
            latest = run_scan(sample_config(sim.url, sim.router_url), store, observer)
            outcomes.append(("all providers, phase 1", latest))
            findings = store.findings(latest.run_id)
            provenance = Provenance.of_run("blocklist", store.get_run(latest.run_id))
            step("scan 5: every provider again, from an account with every provider switched off in its settings")
            outcomes.append(("all providers, providers switched off in the account", run_scan(
                sample_config(sim.url, f"{sim.url}/noproviders/v1"), store, observer)))
        for suffix in ("-wal", "-shm"):
            if Path(str(store_path) + suffix).exists():
                Path(str(store_path) + suffix).unlink()
        os.replace(tmp_name, store_path)
    except BaseException:
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(tmp_name + suffix)
            except FileNotFoundError:
                pass
        raise
    written_blocklist = None
    if blocklist_path is not None:
        written_blocklist = Path(blocklist_path)
        written_blocklist.write_bytes(blocklist_bytes(findings, "csv", provenance=provenance))
    return SampleResult(store_path, written_blocklist, outcomes)


def ensure_sample_store(store_path: str | os.PathLike[str] | None = None) -> Path:
    """Return the sample store, building it first if it does not exist yet."""
    path = Path(store_path) if store_path is not None else config.sample_store()
    if not path.exists():
        build_sample_store(path, None)
    return path
