"""The lean transport's https path: the one the real router uses, against the simulator behind real TLS.

The certificates come from a throwaway CA (trustme); the probe trusts it the way a
user's machine would, through ``SSL_CERT_FILE`` (httpx's default TLS context reads it).
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme

from analysis.devtools.simulator import Scenario, SimulatorServer, synthetic_scenario
from analysis.pipeline.probe import ProbeSettings, probe_targets
from analysis.pipeline.targets import Target
from analysis.pipeline.transport import KeepAliveTransport, lean_transport

from .helpers import sim_stats


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_sim(ca: trustme.CA, make_sim):
    """Start simulators (conftest's ``make_sim``) that speak https with a certificate for 127.0.0.1 signed by
    ``ca``."""

    def start(scenario: Scenario) -> SimulatorServer:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        return make_sim(scenario, ssl_context=context)

    return start


@pytest.fixture
def trusted(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the throwaway CA the one the probe's TLS context trusts."""
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    monkeypatch.setenv("SSL_CERT_FILE", str(pem))
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def _targets(n: int) -> list[Target]:
    return [Target(f"bench-org/model-{i:06d}", "hf-inference", f"bench-org/model-{i:06d}:hf-inference")
            for i in range(n)]


def test_probes_over_https_reuse_one_tls_connection_per_worker(tls_sim, trusted):
    server = tls_sim(synthetic_scenario(40, 5))
    assert server.router_url.startswith("https://")
    assert isinstance(lean_transport(server.router_url), KeepAliveTransport)
    results = asyncio.run(probe_targets(_targets(40), ProbeSettings(router_url=server.router_url, concurrency=4)))
    assert len(results) == 40 and {r.outcome for r in results} == {"chat"}
    stats = sim_stats_tls(server)
    assert stats["chat_requests"] == 40
    # Keep-alive over TLS: each of the 4 workers shakes hands once, not once per request.
    assert stats["connections"] == 4


def test_an_untrusted_certificate_is_a_connection_failure_not_a_crash(tls_sim, monkeypatch):
    server = tls_sim(synthetic_scenario(2, 0))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    results = asyncio.run(probe_targets(_targets(2), ProbeSettings(router_url=server.router_url, concurrency=2,
                                                                   retries=0)))
    assert {r.outcome for r in results} == {"connection"}
    assert all(r.http_status is None and r.error_code == "ConnectError" for r in results)
    assert all("CERTIFICATE_VERIFY_FAILED" in (r.error_message or "") for r in results)


def test_a_body_cut_over_tls_drops_the_connection_and_the_next_request_reconnects(tls_sim, trusted):
    cut = {"id": "case/cut", "pipeline_tag": "text-generation",
           "providers": [{"provider": "p", "status": "live", "task": "conversational", "latency_ms": 0}],
           "routes": {"*": {"kind": "close_mid_body", "times": 1}}}
    server = tls_sim(Scenario(name="tls-cut", models=[cut], provider_order=["p"], router={"latency_scale": 1}))
    result = asyncio.run(probe_targets([Target("case/cut", "p", "case/cut:p")],
                                       ProbeSettings(router_url=server.router_url, concurrency=1, retries=1,
                                                     backoff=0.01)))[0]
    assert [a.outcome for a in result.attempt_log] == ["connection", "chat"]
    assert "mid-body" in (result.attempt_log[0].error_message or "")
    assert sim_stats_tls(server)["connections"] == 2


def sim_stats_tls(server: SimulatorServer) -> dict:
    """The simulator's counters, read in process: asking over https would open one more connection."""
    return server.app.stats()


def test_the_helper_reads_plain_simulators_too(make_sim):
    # The plain-http helper the other tests use still answers (the TLS option is opt-in).
    server = make_sim(synthetic_scenario(1, 0))
    assert server.url.startswith("http://") and sim_stats(server)["connections"] >= 1
