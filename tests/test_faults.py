"""Fault injection: every upstream fault is a real HTTP behaviour of the simulator.

Each case asserts the exact verdict and that the run still completes.  One
scan covers all router faults (module fixture); Hub faults and run-level
faults get a scenario each.
"""

from __future__ import annotations

import httpx
import pytest

from analysis.errors import CatalogError
from analysis.scan import run_scan
from analysis.simulator import Scenario, synthetic_scenario
from analysis.store import open_store

from .conftest import fast_config

CHAT = "conversational"

# model name -> (behaviour on every route, catalog extras, expected reason)
ROUTER_FAULTS = {
    "ok": ({"kind": "chat"}, {}, "ok"),
    "empty-reply": ({"kind": "empty_reply"}, {}, "ok"),
    "gated-403": ({"kind": "error", "status": 403, "code": "gated_repo"}, {}, "gated"),
    "gated-catalog-404": ({"kind": "error", "status": 404}, {"gated": "manual"}, "gated"),
    "non-chat-tag": ({"kind": "error", "status": 400, "code": "model_not_supported", "param": "model"},
                     {"pipeline_tag": "text-classification"}, "non_chat_task"),
    "non-chat-task": ({"kind": "error", "status": 422}, {"task": "feature-extraction"}, "non_chat_task"),
    "mapping-error": ({"kind": "error", "status": 400, "code": "model_not_supported", "param": "model"},
                      {"status": "error"}, "provider_mapping_error"),
    "mapping-staging": ({"kind": "error", "status": 404}, {"status": "staging"}, "provider_mapping_error"),
    "not-found": ({"kind": "error", "status": 404, "code": "model_not_found"}, {}, "not_found"),
    "not-supported-400": ({"kind": "error", "status": 400, "code": "model_not_supported", "param": "model"}, {},
                          "not_supported"),
    "not-supported-422": ({"kind": "error", "status": 422}, {}, "not_supported"),
    "probe-param": ({"kind": "error", "status": 400, "param": "max_tokens", "message": "max_tokens too small"}, {},
                    "probe_error"),
    "rate-limited-no-retry-after": ({"kind": "error", "status": 429}, {}, "rate_limited"),
    "rate-limited-huge-retry-after": ({"kind": "error", "status": 429, "retry_after": 86400}, {}, "rate_limited"),
    "rate-limited-once": ({"kind": "error", "status": 429, "times": 1}, {}, "ok"),
    "slow": ({"kind": "slow"}, {}, "timeout"),
    "stall-mid-body": ({"kind": "stall"}, {}, "timeout"),
    "json-500": ({"kind": "error", "status": 500, "type": "server_error"}, {}, "upstream_error"),
    "html-502": ({"kind": "html", "status": 502}, {}, "upstream_error"),
    "503-retry-after-once": ({"kind": "error", "status": 503, "retry_after": 0.05, "times": 1}, {}, "ok"),
    "reset": ({"kind": "reset"}, {}, "connection_error"),
    "closed-mid-body": ({"kind": "close_mid_body"}, {}, "connection_error"),
    "oversized-body": ({"kind": "oversized", "size_bytes": 3_000_000}, {}, "invalid_response"),
    "invalid-utf8-200": ({"kind": "invalid_utf8"}, {}, "invalid_response"),
    "invalid-utf8-400": ({"kind": "invalid_utf8", "status": 400}, {}, "not_supported"),
    "bad-json": ({"kind": "bad_json"}, {}, "invalid_response"),
    "empty-choices": ({"kind": "empty_choices"}, {}, "invalid_response"),
    "not-a-completion": ({"kind": "not_chat"}, {}, "invalid_response"),
    "non-chat-but-answers": ({"kind": "chat"}, {"pipeline_tag": "fill-mask"}, "ok"),
    "non-chat-times-out": ({"kind": "slow"}, {"pipeline_tag": "fill-mask"}, "timeout"),
}


def _model(name, behaviour, extra):
    extra = dict(extra)
    mapping = {"provider": "p", "status": extra.pop("status", "live"), "task": extra.pop("task", CHAT),
               "latency_ms": 0}
    return {"id": f"fault/{name}", "pipeline_tag": extra.pop("pipeline_tag", "text-generation"), "downloads": 1,
            "providers": [mapping], "routes": {"*": behaviour}, **extra}


def _healthy(i):
    return _model(f"canary-{i}", {"kind": "chat"}, {"downloads": 1000 - i})


@pytest.fixture(scope="module")
def router_fault_findings(tmp_path_factory):
    from analysis.simulator import SimulatorServer

    models = [_model(name, b, e) for name, (b, e, _) in ROUTER_FAULTS.items()] + [_healthy(i) for i in range(3)]
    scenario = Scenario(name="router-faults", provider_order=["p"], router={"latency_scale": 1}, models=models)
    store_path = tmp_path_factory.mktemp("faults") / "rca.sqlite"
    with SimulatorServer(scenario) as server, open_store(store_path) as store:
        config = fast_config(server, provider="p", timeout=0.5, retries=2, retry_after_cap=0.2, route_checks=0,
                             concurrency=12)
        outcome = run_scan(config, store)
        findings = store.findings(outcome.run_id).set_index("model_id")
    return outcome, findings


def test_router_fault_run_completes(router_fault_findings):
    outcome, findings = router_fault_findings
    assert outcome.status == "ok" and outcome.exit_code == 0
    assert len(findings) == len(ROUTER_FAULTS) + 3


@pytest.mark.parametrize("name", list(ROUTER_FAULTS))
def test_router_fault_verdict(router_fault_findings, name):
    _, findings = router_fault_findings
    assert findings.loc[f"fault/{name}", "reason"] == ROUTER_FAULTS[name][2]


def test_fault_details_are_evidence(router_fault_findings):
    _, findings = router_fault_findings
    assert findings.loc["fault/oversized-body", "error_code"] == "oversized_body"
    assert findings.loc["fault/html-502", "error_code"] == "html_error_page"
    assert findings.loc["fault/rate-limited-huge-retry-after", "attempts"] == 3
    assert "exceeds the cap" in findings.loc["fault/rate-limited-huge-retry-after", "note"]
    assert findings.loc["fault/503-retry-after-once", "attempts"] == 2
    assert "not a chat model" in findings.loc["fault/non-chat-times-out", "note"]
    # the error body had invalid UTF-8, and was still parsed (bad bytes replaced)
    assert findings.loc["fault/invalid-utf8-400", "error_code"] == "x"


@pytest.mark.parametrize("status, reason", [(401, "auth_error"), (402, "payment_required"), (410, "endpoint_error")])
def test_run_level_statuses_from_a_model_fail_the_run(make_sim, store_path, status, reason):
    scenario = synthetic_scenario(30, 0, provider="p")
    scenario.models[10]["routes"] = {"*": {"kind": "error", "status": status}}
    server = make_sim(scenario)
    with open_store(store_path) as store:
        outcome = run_scan(fast_config(server, provider="p"), store)
        findings = store.findings(outcome.run_id)
    assert outcome.exit_code == 3 and outcome.failure_reason == reason
    assert not findings["blocked"].any()


HUB_FAULTS = {
    "truncated page, once": {"page_faults": {"1": "truncated_once"}},
    "HTML page with 200, once": {"page_faults": {"2": "html200_once"}},
    "500 on one page, retried": {"page_faults": {"1": "500_once"}},
    "429 with RateLimit": {"rate_limit_pages": [1, 2], "rate_limit_reset": 0},
    "mapping as a dict": {"mapping_shape": "dict"},
    "mapping missing": {"mapping_shape": "missing"},
}


@pytest.mark.parametrize("case", list(HUB_FAULTS))
def test_hub_fault_run_completes(make_sim, store_path, case):
    scenario = synthetic_scenario(23, 0, provider="p", page_cap=5)
    scenario.hub.update(HUB_FAULTS[case])
    server = make_sim(scenario)
    with open_store(store_path) as store:
        outcome = run_scan(fast_config(server, provider="p"), store)
        catalog = store.catalog(outcome.run_id)
        findings = store.findings(outcome.run_id)
    assert outcome.status == "ok"
    assert len(catalog) == catalog["model_id"].nunique() == 23
    assert set(findings["reason"]) == {"ok"}
    stats = httpx.get(f"{server.url}/_sim/stats").json()
    assert stats["hub_pages_served"] >= 5


@pytest.mark.parametrize("fault, words", [("loop", "loops"), ("truncated", "malformed JSON"),
                                          ("html200", "HTML page")])
def test_hub_fault_that_persists_stops_with_a_clear_error(make_sim, store_path, fault, words):
    scenario = synthetic_scenario(23, 0, provider="p", page_cap=5)
    scenario.hub["page_faults"] = {"2": fault}
    server = make_sim(scenario)
    with open_store(store_path) as store:
        with pytest.raises(CatalogError, match=words):
            run_scan(fast_config(server, provider="p"), store)
        run = store.get_run(1)
    assert run["status"] == "failed" and run["failure_reason"] == "catalog_error"
