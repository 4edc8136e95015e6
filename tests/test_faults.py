"""Fault injection: every upstream fault is a real HTTP behaviour of the simulator.

Each case asserts the exact verdict and that the run still completes.  One
scan covers all router faults (module fixture); Hub faults and run-level
faults get a scenario each.
"""

from __future__ import annotations

import httpx
import pytest

from analysis.devtools.simulator import Scenario, synthetic_scenario
from analysis.errors import CatalogError
from analysis.pipeline.scan import run_scan
from analysis.store import open_store

from .helpers import fast_config

CHAT = "conversational"

# model name -> (behaviour on every route, catalog extras, expected reason)
ROUTER_FAULTS = {
    "ok": ({"kind": "chat"}, {}, "ok"),
    "empty-reply": ({"kind": "empty_reply"}, {}, "ok"),
    "gated-403": ({"kind": "error", "status": 403, "code": "gated_repo"}, {}, "gated"),
    "gated-catalog-404": ({"kind": "error", "status": 404}, {"gated": "manual"}, "not_found"),  # catalog alone
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
    # a refusal of our request that no change fixes: judged by the model rows
    "probe-param": ({"kind": "error", "status": 400, "param": "max_tokens", "message": "max_tokens too small"}, {},
                    "not_supported"),
    # request experiments that answer: the probe's fault, not the model's
    "budget-too-small": ({"kind": "error", "status": 400, "param": "max_tokens", "message": "max_tokens too small",
                          "accepts": {"min_budget": 1000}}, {}, "probe_error"),
    "tgi-budget-limit": ({"kind": "error", "status": 422, "shape": "tgi", "accepts": {"max_budget": 2},
                          "message": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 12. "
                                     "Given: 10 `inputs` tokens and 16 `max_new_tokens`"}, {}, "probe_error"),
    "stream-only": ({"kind": "error", "status": 400, "param": None, "accepts": {"stream": True},
                     "message": "This model only support stream mode, please enable the stream parameter."}, {},
                    "probe_error"),
    "wants-max-completion-tokens": ({"kind": "error", "status": 400, "param": "max_tokens",
                                     "code": "unsupported_parameter", "accepts": {"param": "max_completion_tokens"},
                                     "message": "Unsupported parameter: 'max_tokens' is not supported with this "
                                                "model. Use 'max_completion_tokens' instead."}, {}, "probe_error"),
    "messages-shape": ({"kind": "error", "status": 422, "accepts": {"content_parts": True},
                        "message": "Failed to deserialize the JSON body into the target type: messages[0].content: "
                                   "invalid type: string, expected a sequence"}, {}, "probe_error"),
    "non-chat-refuses-chat-fields": ({"kind": "error", "status": 422, "message": "messages: unknown field",
                                      "accepts": {"content_parts": True}}, {"pipeline_tag": "text-classification"},
                                     "non_chat_task"),
    "no-chat-template": ({"kind": "error", "status": 422, "shape": "tgi",
                          "message": "Template error: the model has no chat template"}, {}, "non_chat_task"),
    # temporary in any status, and one model's 401/402/403/410 after the canaries passed
    "paused-400": ({"kind": "error", "status": 400, "message": "The endpoint is paused, ask a maintainer to "
                                                              "restart it"}, {}, "upstream_error"),
    "loading-503": ({"kind": "error", "status": 503, "shape": "string", "extra": {"estimated_time": 20.0},
                     "message": "Model fault/loading-503 is currently loading"}, {}, "upstream_error"),
    "failed-dependency-424": ({"kind": "error", "status": 424}, {}, "upstream_error"),
    "request-timeout-408": ({"kind": "error", "status": 408}, {}, "timeout"),
    "one-model-401": ({"kind": "error", "status": 401, "shape": "string",
                       "message": "Invalid credentials in Authorization header"}, {}, "upstream_error"),
    "one-model-402": ({"kind": "error", "status": 402}, {}, "upstream_error"),
    "one-model-410": ({"kind": "error", "status": 410}, {}, "upstream_error"),
    "one-model-403-token": ({"kind": "error", "status": 403, "shape": "string", "message": "This authentication "
                             "method does not have sufficient permissions to call Inference Providers on behalf of "
                             "user x"}, {}, "upstream_error"),
    "403-waf": ({"kind": "error", "status": 403, "shape": "text", "message": "Request blocked by WAF"}, {},
                "upstream_error"),
    "string-shape-404": ({"kind": "error", "status": 404, "shape": "string", "message": "Not found"}, {},
                         "not_found"),
    "sse-body": ({"kind": "sse_body"}, {}, "ok"),
    "reasoning-reply": ({"kind": "reasoning_reply"}, {}, "ok"),
    "reasoning-field": ({"kind": "reasoning_reply", "field": "reasoning"}, {}, "ok"),
    "bad-content-encoding": ({"kind": "bad_encoding"}, {}, "invalid_response"),
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
    from analysis.devtools.simulator import SimulatorServer

    models = [_model(name, b, e) for name, (b, e, _) in ROUTER_FAULTS.items()] + [_healthy(i) for i in range(3)]
    scenario = Scenario(name="router-faults", provider_order=["p"], router={"latency_scale": 1}, models=models)
    store_path = tmp_path_factory.mktemp("faults") / "rca.sqlite"
    with SimulatorServer(scenario) as server, open_store(store_path) as store:
        config = fast_config(server, provider="p", timeout=0.5, retries=2, retry_after_cap=0.2, route_checks=0,
                             concurrency=12)
        outcome = run_scan(config, store)
        findings = store.findings(outcome.run_id).set_index("model_id")
        requests = httpx.get(f"{server.url}/_sim/stats").json()["requests"]
    return outcome, findings, requests


def test_router_fault_run_completes(router_fault_findings):
    outcome, findings, _ = router_fault_findings
    assert outcome.status == "ok" and outcome.exit_code == 0
    assert len(findings) == len(ROUTER_FAULTS) + 3


@pytest.mark.parametrize("name", list(ROUTER_FAULTS))
def test_router_fault_verdict(router_fault_findings, name):
    _, findings, _ = router_fault_findings
    assert findings.loc[f"fault/{name}", "reason"] == ROUTER_FAULTS[name][2]


def test_fault_details_are_evidence(router_fault_findings):
    _, findings, _ = router_fault_findings
    assert findings.loc["fault/oversized-body", "error_code"] == "oversized_body"
    assert findings.loc["fault/html-502", "error_code"] == "html_error_page"
    assert findings.loc["fault/rate-limited-huge-retry-after", "attempts"] == 1  # not waited out 0.2 s at a time
    assert "Retry-After 86400s advertised" in findings.loc["fault/rate-limited-huge-retry-after", "note"]
    assert findings.loc["fault/bad-content-encoding", "error_code"] == "undecodable_body"
    assert "SSE stream" in findings.loc["fault/sse-body", "note"]
    assert "reasoning only" in findings.loc["fault/reasoning-reply", "note"]
    assert "for this model alone" in findings.loc["fault/one-model-401", "note"]
    working = findings["working_settings"].dropna().to_dict()
    assert working == {"fault/budget-too-small": "max_tokens=4096; stream=true",
                       "fault/tgi-budget-limit": "max_tokens=2", "fault/stream-only": "stream=true",
                       "fault/wants-max-completion-tokens": "max_completion_tokens=16",
                       "fault/messages-shape": "content as text parts"}
    assert "retried with max_tokens=4096; stream=true: 400" in findings.loc["fault/probe-param", "detail"]
    assert findings.loc["fault/503-retry-after-once", "attempts"] == 2
    assert "not a chat model" in findings.loc["fault/non-chat-times-out", "note"]
    # the error body had invalid UTF-8, and was still parsed (bad bytes replaced)
    assert findings.loc["fault/invalid-utf8-400", "error_code"] == "x"


@pytest.mark.parametrize("status", [401, 402, 410])
def test_one_models_run_level_status_after_the_canaries_passed_is_that_models(make_sim, store_path, status):
    scenario = synthetic_scenario(30, 0, provider="p")
    scenario.models[10]["routes"] = {"*": {"kind": "error", "status": status}}
    server = make_sim(scenario)
    with open_store(store_path) as store:
        outcome = run_scan(fast_config(server, provider="p"), store)
        findings = store.findings(outcome.run_id).set_index("model_id")
    assert outcome.exit_code == 0 and outcome.status == "ok"
    assert findings.loc[scenario.models[10]["id"], "reason"] == "upstream_error"
    assert (findings["reason"] == "ok").sum() == 29 and not findings["blocked"].any()


def test_experiments_re_probe_each_target_once_with_what_the_refusal_names(router_fault_findings):
    requests = router_fault_findings[2]
    first = {"max_tokens": 16, "max_completion_tokens": None, "stream": False, "content_parts": False}
    expected = {
        "budget-too-small": {**first, "max_tokens": 4096, "stream": True},
        "tgi-budget-limit": {**first, "max_tokens": 2},
        "stream-only": {**first, "stream": True},
        "wants-max-completion-tokens": {**first, "max_tokens": None, "max_completion_tokens": 16},
        "messages-shape": {**first, "content_parts": True},
        "probe-param": {**first, "max_tokens": 4096, "stream": True},
    }
    for name, experiment in expected.items():
        assert requests[f"fault/{name}:p"] == [first, experiment], name
    # no experiment for a model the catalog calls non-chat, nor for refusals that are not about our request
    for name in ("non-chat-refuses-chat-fields", "not-supported-400", "not-found", "paused-400"):
        assert len(requests[f"fault/{name}:p"]) == 1, name


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
    assert run.status == "failed" and run.failure_reason == "catalog_error"
