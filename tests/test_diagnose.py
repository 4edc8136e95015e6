"""Taxonomy version 2, every row and every precedence case, through the pure classifier; the pure run-level
judgement (canaries, majority), request-experiment planning and error signatures."""

from __future__ import annotations

from collections import namedtuple

import pandas as pd
import pytest

from analysis.pipeline.canaries import choose_canaries, judge_canaries, majority_fault, parse_canary
from analysis.pipeline.diagnose import Facts, classify, diagnose, request_fault, user_message
from analysis.pipeline.experiments import plan_change
from analysis.pipeline.probe import ProbeSettings, RequestChange
from analysis.pipeline.signature import CONNECTION_SIGNATURE, TIMEOUT_SIGNATURE, error_signature
from analysis.pipeline.targets import Target
from analysis.schema import FINDING_COLUMNS
from analysis.taxonomy import BLOCKING, REASON_NAMES, RUN_LEVEL, TAXONOMY_VERSION, TRANSIENT, reason_info

ENABLED = "The requested model '{m}' is not supported by any provider you have enabled."
PERMISSION = ("This authentication method does not have sufficient permissions to call Inference Providers on "
              "behalf of user someone")
TGI_BUDGET = ("Input validation error: `inputs` tokens + `max_new_tokens` must be <= 1024. Given: 1020 `inputs` "
              "tokens and 16 `max_new_tokens`")


def facts(status=None, outcome="http_error", **kw) -> Facts:
    base = dict(model_id="org/model-7B", provider="hf-inference", http_status=status, outcome=outcome, attempts=1,
                pipeline_tag="text-generation", gated="false", mapping_status="live", mapping_task="conversational",
                in_router_list=True)
    base.update(kw)
    return Facts(**base)


@pytest.mark.parametrize("case, expected", [
    # run-level reasons come from the run's guard only, applied through Facts.run_level
    (facts(400, run_level="endpoint_error"), "endpoint_error"),
    (facts(None, outcome=None, run_level="auth_error"), "auth_error"),
    (facts(404, working_route="org/model-7B"), "route_mismatch"),
    (facts(400, error_message="max_tokens too small [param=max_tokens]", working_settings="max_tokens=4096"),
     "probe_error"),
    (facts(403, error_code="gated_repo", error_message="Access to model org/model-7B is restricted"), "gated"),
    (facts(400, pipeline_tag="feature-extraction", mapping_task="feature-extraction"), "non_chat_task"),
    (facts(400, mapping_task="text-generation"), "non_chat_task"),
    (facts(422, pipeline_tag="summarization"), "non_chat_task"),
    (facts(422, error_message="Template error: the model has no chat template"), "non_chat_task"),
    (facts(400, mapping_status="error"), "provider_mapping_error"),
    (facts(404, mapping_status="staging"), "provider_mapping_error"),
    (facts(404), "not_found"),
    (facts(400, error_code="model_not_supported", error_message="not supported [param=model]"), "not_supported"),
    (facts(422), "not_supported"),
    (facts(429), "rate_limited"),
    (facts(None, outcome="timeout"), "timeout"),
    (facts(408), "timeout"),
    (facts(500), "upstream_error"),
    (facts(424), "upstream_error"),
    (facts(502, error_code="html_error_page"), "upstream_error"),
    (facts(None, outcome="connection"), "connection_error"),
    (facts(200, outcome="invalid"), "invalid_response"),
    (facts(200, outcome="chat"), "ok"),
])
def test_each_taxonomy_row(case, expected):
    assert classify(case).reason == expected


@pytest.mark.parametrize("case", [
    facts(401, error_message="Invalid credentials in Authorization header"),
    facts(402, error_message="You have exceeded your monthly included credits"),
    facts(410, error_message="The requested API endpoint is no longer supported"),
    facts(403, error_message=PERMISSION),
    facts(403, error_message="Request blocked by the web application firewall"),
])
def test_one_models_401_402_403_410_is_upstream_error_not_run_level(case):
    verdict = classify(case)
    assert verdict.reason == "upstream_error" and verdict.reason not in BLOCKING


@pytest.mark.parametrize("status, message", [
    (400, "The endpoint is paused, ask a maintainer to restart it"),
    (503, "Model org/model-7B is currently loading"),
    (404, "Model is currently loading"),
    (422, "This endpoint is temporarily unavailable"),
])
def test_temporary_unavailability_is_transient_in_any_status(status, message):
    assert classify(facts(status, error_message=message)).reason == "upstream_error"


def test_catalog_gated_alone_is_not_evidence():
    verdict = classify(facts(404, gated="manual"))
    assert verdict.reason == "not_found"
    assert "catalog gated=manual (repo gating does not apply to Inference Providers)" in verdict.detail
    assert classify(facts(400, gated="auto", error_code="model_not_supported")).reason == "not_supported"


@pytest.mark.parametrize("case, expected, beats", [
    (facts(400, pipeline_tag="feature-extraction", working_route="x"), "route_mismatch", "non_chat_task"),
    (facts(400, error_message="x [param=max_tokens]", working_settings="max_tokens=4096", mapping_status="error"),
     "probe_error", "provider_mapping_error"),
    (facts(403, error_message="Access to model X is restricted", pipeline_tag="text-classification"), "gated",
     "non_chat_task"),
    (facts(400, pipeline_tag="sentence-similarity", mapping_status="error"), "non_chat_task",
     "provider_mapping_error"),
    (facts(404, mapping_status="error"), "provider_mapping_error", "not_found"),
    (facts(400, run_level="endpoint_error", working_route="x"), "endpoint_error", "route_mismatch"),
])
def test_precedence(case, expected, beats):
    assert classify(case).reason == expected
    assert REASON_NAMES.index(expected) < REASON_NAMES.index(beats)


def test_a_failed_experiment_falls_through_to_the_model_rows_with_the_experiment_as_evidence():
    verdict = classify(facts(400, error_message="max_tokens must be at least 1024 for this model",
                             experiment="retried with max_tokens=4096; stream=true: 400"))
    assert verdict.reason == "not_supported"
    assert "retried with max_tokens=4096; stream=true: 400" in verdict.detail


@pytest.mark.parametrize("case, expected", [
    # catalog facts only explain a refusal
    (facts(200, outcome="chat", pipeline_tag="feature-extraction"), "ok"),
    (facts(None, outcome="timeout", pipeline_tag="feature-extraction"), "timeout"),
    (facts(500, pipeline_tag="text-classification", mapping_status="error"), "upstream_error"),
    (facts(429, gated="manual"), "rate_limited"),
    (facts(None, outcome="connection", mapping_status="error"), "connection_error"),
])
def test_catalog_facts_only_explain_refusals(case, expected):
    verdict = classify(case)
    assert verdict.reason == expected
    if case.pipeline_tag == "feature-extraction":
        assert "not a chat model" in verdict.note


def test_missing_pipeline_tag_is_not_evidence_of_non_chat():
    assert classify(facts(404, pipeline_tag=None, mapping_task=None)).reason == "not_found"


def test_unexpected_status_is_not_blocking():
    verdict = classify(facts(405))
    assert verdict.reason == "invalid_response"
    assert verdict.reason not in BLOCKING


def test_detail_is_one_line_of_evidence():
    detail = classify(facts(404, error_code="model_not_found", in_router_list=False)).detail
    assert detail == ("router 404 model_not_found (1 attempt); pipeline_tag=text-generation; "
                      "hf-inference mapping live (conversational); not in router list")


def test_taxonomy_flags_match_design():
    assert TAXONOMY_VERSION == 2
    assert RUN_LEVEL == {"auth_error", "payment_required", "endpoint_error"}
    assert {"gated", "non_chat_task", "provider_mapping_error", "not_found", "not_supported",
            "persistent_failure"} == BLOCKING
    assert TRANSIENT == {"rate_limited", "timeout", "upstream_error", "connection_error", "invalid_response"}
    assert REASON_NAMES[:5] == ("auth_error", "payment_required", "endpoint_error", "route_mismatch", "probe_error")
    assert reason_info("probe_error").action == "fix probe" and reason_info("route_mismatch").action == "fix route"


def test_user_messages_name_the_fix_and_promise_nothing_untrue():
    assert "'a/b:hf-inference'" in user_message("route_mismatch", "a/b", "a/b:hf-inference")
    assert "max_tokens=4096; stream=true" in user_message("probe_error", "a/b", None, "max_tokens=4096; stream=true")
    for name in REASON_NAMES:
        text = user_message(name, "x/y")
        assert "{model}" not in text and "has been told" not in text


# --------------------------------------------------------------------------- request faults and experiments


@pytest.mark.parametrize("status, code, message, fault", [
    (400, None, "max_tokens too small [param=max_tokens]", "max_tokens"),
    (422, None, TGI_BUDGET, "max_new_tokens"),
    (400, None, "This model only support stream mode, please enable the stream parameter.", "stream"),
    (400, "unsupported_parameter", "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
     "'max_completion_tokens' instead. [param=max_tokens]", "max_tokens"),
    (422, None, "Failed to deserialize the JSON body: messages[0].content: invalid type", "messages"),
    (400, None, "the thinking budget is larger than the output budget", "max_tokens"),
    (400, "model_not_supported", ENABLED.format(m="a/b") + " [param=model]", None),
    (400, "model_not_supported", "The model does not support chat messages", None),
    (404, None, "Model a/b does not exist", None),
    (500, None, "max_tokens", None),  # only a refusal can be about our request
])
def test_request_fault(status, code, message, fault):
    assert request_fault(status, code, message) == fault


@pytest.mark.parametrize("message, change", [
    ("max_tokens is too small for a reasoning model [param=max_tokens]", RequestChange(max_tokens=4096, stream=True)),
    ("max_tokens must be at least 8192 for this model", RequestChange(max_tokens=8192, stream=True)),
    (TGI_BUDGET, RequestChange(max_tokens=4)),
    ("`max_new_tokens` must be <= 8", RequestChange(max_tokens=8)),
    ("This model only support stream mode, please enable the stream parameter.", RequestChange(stream=True)),
    ("Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
     RequestChange(completion_tokens=True)),
    ("messages: invalid type: string, expected a sequence", RequestChange(content_parts=True)),
    ("bad value [param=temperature]", None),
])
def test_plan_change(message, change):
    assert plan_change(400, None, message, max_tokens=16) == change


def test_working_settings_say_everything_that_changed():
    settings = ProbeSettings(router_url="http://x/v1", max_tokens=16)
    assert RequestChange(max_tokens=4096, stream=True).describe(settings) == "max_tokens=4096; stream=true"
    assert RequestChange(completion_tokens=True).describe(settings) == "max_completion_tokens=16"
    assert RequestChange(stream=True).describe(settings) == "stream=true"


# --------------------------------------------------------------------------- the run-level guard

Result = namedtuple("Result", "model_id provider model_string http_status outcome error_code error_message")


def _r(status, outcome="http_error", code=None, message=None, model="org/m", provider="p"):
    return Result(model, provider, f"{model}:{provider}", status, outcome, code, message)


@pytest.mark.parametrize("results, reason, cause", [
    # the account has the provider switched off: decides alone
    ([_r(400, code="model_not_supported", message=ENABLED.format(m="org/a"), model="org/a"), _r(200, "invalid")],
     "endpoint_error", "account"),
    ([_r(403, message=PERMISSION)], "auth_error", "forbidden"),
    ([_r(401, message="Invalid username or password.")], "auth_error", "token"),
    ([_r(402, message="credits")], "payment_required", "payment"),
    ([_r(410, message="gone")], "endpoint_error", "retired"),
    # the same refusal, differing only by model id, on every answered canary
    ([_r(404, message="Model org/a does not exist", model="org/a"),
      _r(404, message="Model org/b does not exist", model="org/b"), _r(None, "timeout", model="org/c")],
     "endpoint_error", "same_refusal"),
    ([_r(None, "connection", model="org/a"), _r(None, "timeout", model="org/b")], "endpoint_error", "unreachable"),
    ([_r(200, "invalid", message="2xx body is not valid JSON", model="org/a"),
      _r(200, "invalid", message="2xx chat completion has no choices", model="org/b")], "endpoint_error", "not_chat"),
])
def test_canaries_that_all_fail_alike_are_run_level(results, reason, cause):
    fault = judge_canaries("p", results)
    assert fault is not None and (fault.reason, fault.cause) == (reason, cause)
    assert fault.hint("http://r/v1")


@pytest.mark.parametrize("results", [
    [],
    [_r(404, message="Model org/a does not exist", model="org/a")],  # a signature verdict needs two canaries
    [_r(None, "timeout")],
    [_r(503, model="org/a"), _r(503, model="org/b")],  # transient on all: not run-level
    [_r(429, model="org/a"), _r(500, model="org/b")],
    [_r(404, message="Model org/a does not exist", model="org/a"), _r(200, "chat", model="org/b")],
    [_r(404, code="model_not_found", model="org/a"), _r(400, code="model_not_supported", model="org/b")],
])
def test_canaries_that_do_not_fail_alike_are_not_run_level(results):
    assert judge_canaries("p", results) is None


def test_the_account_text_is_the_hint():
    fault = judge_canaries("novita", [_r(400, message=ENABLED.format(m="org/a"), model="org/a")])
    assert "switched off in your Hugging Face settings" in fault.hint("http://r/v1")
    assert "provider novita" in fault.hint("http://r/v1")


def test_majority_rule():
    many = [_r(401, message="Invalid credentials", model=f"org/m{i}") for i in range(6)] + \
           [_r(200, "chat", model=f"org/ok{i}") for i in range(5)]
    signature, fault = majority_fault("p", many)
    assert fault is not None and fault.reason == "auth_error"
    refusals = [_r(400, message=ENABLED.format(m=f"org/m{i}"), model=f"org/m{i}") for i in range(7)] + \
               [_r(200, "chat", model=f"org/ok{i}") for i in range(4)]
    signature, fault = majority_fault("p", refusals)
    assert fault is None and "any provider you have enabled" in signature  # the canaries decide
    assert majority_fault("p", refusals[:9]) is None  # fewer than 10 answered
    half = refusals[:5] + [_r(200, "chat", model=f"org/x{i}") for i in range(5)]
    assert majority_fault("p", half) is None


def test_parse_canary():
    assert parse_canary("org/m") == ("org/m", None)
    assert parse_canary("org/m:novita") == ("org/m", "novita")


def test_canaries_per_provider_prefer_live_router_listed_popular_chat_models():
    catalog = pd.DataFrame([
        _catalog_row("a/top", downloads=900, providers={"p": "live", "q": "live"}),
        _catalog_row("a/unlisted", downloads=5000, providers={"p": "live"}, listed=False),
        _catalog_row("a/gated", downloads=4000, providers={"p": "live"}, gated="manual"),
        _catalog_row("a/broken", downloads=3000, providers={"p": "error", "q": "live"}),
        _catalog_row("a/second", downloads=10, providers={"p": "live"}),
    ])
    targets = [Target(m, p, f"{m}:{p}") for m, ps in (("a/top", "pq"), ("a/unlisted", "p"), ("a/gated", "p"),
                                                         ("a/broken", "pq"), ("a/second", "p")) for p in ps]
    chosen = choose_canaries(catalog, targets, [], 2, True)
    assert [c.model_id for c in chosen["p"]] == ["a/top", "a/second"]
    assert [c.model_id for c in chosen["q"]] == ["a/broken", "a/top"]
    explicit = choose_canaries(catalog, targets, ["a/second:q", "x/outside"], 2, True)
    assert [c.model_string for c in explicit["q"]] == ["a/second:q", "x/outside:q"]
    assert [c.model_string for c in explicit["p"]] == ["x/outside:p"]


# --------------------------------------------------------------------------- error signatures


def test_twenty_models_with_one_cause_share_one_signature():
    signatures = {error_signature(400, "model_not_supported", ENABLED.format(m=f"org{i}/Model-{i}B") +
                                  " [param=model]", "http_error", f"org{i}/Model-{i}B:together", f"org{i}/Model-{i}B")
                  for i in range(20)}
    assert len(signatures) == 1
    signature = signatures.pop()
    assert signature.startswith("400 model_not_supported ") and "[param=model]" in signature
    assert "org1" not in signature and len(signature) <= 200


def test_signatures_keep_backticked_names_and_replace_numbers_and_hex():
    a = error_signature(422, None, TGI_BUDGET, "http_error", "x/y", "x/y")
    b = error_signature(422, None, TGI_BUDGET.replace("1020", "900").replace("1024", "2048"), "http_error", "z/w",
                        "z/w")
    assert a == b and "`max_new_tokens`" in a and "1024" not in a
    c = error_signature(500, None, "request 3f2a9c1b77de44aa failed, id 123e4567-e89b-12d3-a456-426614174000",
                        "http_error")
    assert c == "500 - request <hex> failed, id <uuid>"
    assert error_signature(None, "timeout", "no answer within 30s", "timeout") == TIMEOUT_SIGNATURE
    assert error_signature(None, "ConnectError", "refused", "connection") == CONNECTION_SIGNATURE
    assert error_signature(200, None, None, "chat") is None


# --------------------------------------------------------------------------- diagnose over frames


def _probe_row(model_id, provider, status, outcome, kind="primary", route_for="", model_string=None, settings="",
               message=None):
    return {"model_id": model_id, "provider": provider, "kind": kind, "route_for": route_for,
            "model_string": model_string or f"{model_id}:{provider}", "http_status": status, "outcome": outcome,
            "error_code": None, "error_message": message, "latency_ms": 12.0, "attempts": 1,
            "finished_at": "2026-01-01T00:00:00Z", "note": "", "settings": settings}


def _catalog_row(model_id, tag="text-generation", status="live", task="conversational", gated="false", downloads=1,
                 providers=None, listed=True):
    providers = providers or {"p": status}
    return {"model_id": model_id, "author": model_id.split("/")[0], "pipeline_tag": tag, "tags": [],
            "library_name": None, "gated": gated, "downloads": downloads, "likes": 0, "created_at": None,
            "last_modified": None,
            "mapping": {p: {"status": s, "task": task, "providerId": ""} for p, s in providers.items()},
            "mapping_shape": "list", "in_router_list": listed, "router_providers": sorted(providers)}


def test_diagnose_frame_blocks_only_in_successful_runs():
    catalog = pd.DataFrame([_catalog_row("a/x", tag="fill-mask"), _catalog_row("a/y")])
    probes = pd.DataFrame([_probe_row("a/x", "p", 400, "http_error"), _probe_row("a/y", "p", 200, "chat")])
    ok = diagnose(catalog, probes)
    assert list(ok.columns) == FINDING_COLUMNS
    assert ok.set_index("model_id")["reason"].to_dict() == {"a/x": "non_chat_task", "a/y": "ok"}
    assert ok.set_index("model_id")["blocked"].to_dict() == {"a/x": True, "a/y": False}
    signatures = ok.set_index("model_id")["error_signature"]
    assert signatures["a/x"] == "400 -" and pd.isna(signatures["a/y"])
    failed = diagnose(catalog, probes, run_ok=False)
    assert not failed["blocked"].any()


def test_diagnose_uses_route_checks_and_experiments_for_the_same_target():
    catalog = pd.DataFrame([_catalog_row("a/x"), _catalog_row("a/y")])
    probes = pd.DataFrame([
        _probe_row("a/x", "p", 400, "http_error"),
        _probe_row("a/x", "", 200, "chat", kind="route", route_for="p", model_string="a/x"),
        _probe_row("a/y", "p", 400, "http_error", message="budget too small [param=max_tokens]"),
        _probe_row("a/y", "p", 200, "chat", kind="experiment", route_for="p", settings="max_tokens=4096; stream=true"),
    ])
    rows = diagnose(catalog, probes).set_index("model_id")
    assert rows.loc["a/x", "reason"] == "route_mismatch" and not rows.loc["a/x", "blocked"]
    assert rows.loc["a/x", "working_route"] == "a/x" and "'a/x'" in rows.loc["a/x", "message"]
    assert rows.loc["a/y", "reason"] == "probe_error" and not rows.loc["a/y", "blocked"]
    assert rows.loc["a/y", "working_settings"] == "max_tokens=4096; stream=true"
    assert "works with max_tokens=4096; stream=true" in rows.loc["a/y", "detail"]
    assert rows.loc["a/y", "action"] == "fix probe"


def test_diagnose_gives_a_faulted_providers_targets_its_run_level_reason_unjudged():
    catalog = pd.DataFrame([_catalog_row("a/x", providers={"p": "live", "q": "live"})])
    probes = pd.DataFrame([_probe_row("a/x", "p", 404, "http_error")])
    targets = [Target("a/x", "p", "a/x:p"), Target("a/x", "q", "a/x:q")]
    rows = diagnose(catalog, probes, targets=targets, faulted={"q": ("endpoint_error", "switched off")})
    rows = rows.set_index("provider")
    assert rows.loc["p", "reason"] == "not_found" and rows.loc["p", "blocked"]
    assert rows.loc["q", "reason"] == "endpoint_error" and not rows.loc["q", "blocked"]
    assert rows.loc["q", "detail"].startswith("not judged: switched off; not probed")


def test_model_missing_from_catalog_is_judged_on_the_probe_alone():
    probes = pd.DataFrame([_probe_row("ghost/m", "p", 404, "http_error")])
    row = diagnose(pd.DataFrame([_catalog_row("a/x")]), probes).iloc[0]
    assert row["reason"] == "not_found" and "not in catalog" in row["detail"]


@pytest.mark.parametrize("message, expected", [
    ("Access to model org/model-7B is restricted. You must have access to it and be authenticated.", "gated"),
    ("Access restricted in your region", "upstream_error"),
    ("Request blocked by the firewall", "upstream_error"),
])
def test_a_403_is_gated_only_when_it_is_about_the_repository(message, expected):
    assert classify(facts(403, error_message=message)).reason == expected
