"""Every taxonomy row and every precedence case, through the pure classifier."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.diagnose import FINDING_COLUMNS, Facts, classify, diagnose, user_message
from analysis.taxonomy import BLOCKING, REASON_NAMES, RUN_LEVEL, TRANSIENT, reason_info


def facts(status=None, outcome="http_error", **kw) -> Facts:
    base = dict(model_id="org/model-7B", provider="hf-inference", http_status=status, outcome=outcome, attempts=1,
                pipeline_tag="text-generation", gated="false", mapping_status="live", mapping_task="conversational",
                in_router_list=True)
    base.update(kw)
    return Facts(**base)


@pytest.mark.parametrize("case, expected", [
    (facts(401), "auth_error"),
    (facts(402), "payment_required"),
    (facts(410), "endpoint_error"),
    (facts(403), "gated"),
    (facts(404, gated="manual"), "gated"),
    (facts(400, pipeline_tag="feature-extraction", mapping_task="feature-extraction"), "non_chat_task"),
    (facts(400, mapping_task="text-generation"), "non_chat_task"),
    (facts(422, pipeline_tag="summarization"), "non_chat_task"),
    (facts(400, mapping_status="error"), "provider_mapping_error"),
    (facts(404, mapping_status="staging"), "provider_mapping_error"),
    (facts(404), "not_found"),
    (facts(400, error_code="model_not_supported", error_message="not supported [param=model]"), "not_supported"),
    (facts(422), "not_supported"),
    (facts(400, error_message="max_tokens too small [param=max_tokens]"), "probe_error"),
    (facts(429), "rate_limited"),
    (facts(None, outcome="timeout"), "timeout"),
    (facts(500), "upstream_error"),
    (facts(502, error_code="html_error_page"), "upstream_error"),
    (facts(None, outcome="connection"), "connection_error"),
    (facts(200, outcome="invalid"), "invalid_response"),
    (facts(200, outcome="chat"), "ok"),
    (facts(404, working_route="org/model-7B"), "route_mismatch"),
])
def test_each_taxonomy_row(case, expected):
    assert classify(case).reason == expected


@pytest.mark.parametrize("case, expected, beats", [
    # gated (catalog) beats non-chat, mapping error and not_found
    (facts(404, gated="auto", pipeline_tag="feature-extraction", mapping_status="error"), "gated", "non_chat_task"),
    # non-chat beats a mapping in error
    (facts(400, pipeline_tag="sentence-similarity", mapping_status="error"), "non_chat_task", "provider_mapping_error"),
    # a mapping in error beats not_found
    (facts(404, mapping_status="error"), "provider_mapping_error", "not_found"),
    # 403 is gated even for a non-chat model
    (facts(403, pipeline_tag="text-classification"), "gated", "non_chat_task"),
    # run-level beats everything
    (facts(401, gated="manual", pipeline_tag="fill-mask"), "auth_error", "gated"),
    # a working alternative route beats catalog explanations
    (facts(400, pipeline_tag="feature-extraction", working_route="x"), "route_mismatch", "non_chat_task"),
])
def test_precedence(case, expected, beats):
    assert classify(case).reason == expected
    assert REASON_NAMES.index(expected) < REASON_NAMES.index(beats)


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
    assert RUN_LEVEL == {"auth_error", "payment_required", "endpoint_error"}
    assert {"gated", "non_chat_task", "provider_mapping_error", "not_found", "not_supported"} <= BLOCKING
    assert TRANSIENT == {"rate_limited", "timeout", "upstream_error", "connection_error", "invalid_response"}
    assert not BLOCKING & (RUN_LEVEL | TRANSIENT | {"ok", "route_mismatch", "probe_error"})


def test_user_message_names_model_and_working_route():
    text = user_message("route_mismatch", "a/b", "a/b:hf-inference")
    assert "a/b" in text and "'a/b:hf-inference'" in text
    for name in REASON_NAMES:
        assert "{model}" not in user_message(name, "x/y")
        assert reason_info(name).message


def _probe_row(model_id, provider, status, outcome, kind="primary", route_for="", model_string=None):
    return {"model_id": model_id, "provider": provider, "kind": kind, "route_for": route_for,
            "model_string": model_string or f"{model_id}:{provider}", "http_status": status, "outcome": outcome,
            "error_code": None, "error_message": None, "latency_ms": 12.0, "attempts": 1,
            "finished_at": "2026-01-01T00:00:00Z", "note": ""}


def _catalog_row(model_id, tag="text-generation", status="live", task="conversational", gated="false"):
    return {"model_id": model_id, "author": model_id.split("/")[0], "pipeline_tag": tag, "tags": [],
            "library_name": None, "gated": gated, "downloads": 1, "likes": 0, "created_at": None,
            "last_modified": None, "mapping": {"p": {"status": status, "task": task, "providerId": ""}},
            "mapping_shape": "list", "in_router_list": True, "router_providers": ["p"]}


def test_diagnose_frame_blocks_only_in_successful_runs():
    catalog = pd.DataFrame([_catalog_row("a/x", tag="fill-mask"), _catalog_row("a/y")])
    probes = pd.DataFrame([_probe_row("a/x", "p", 400, "http_error"), _probe_row("a/y", "p", 200, "chat")])
    ok = diagnose(catalog, probes)
    assert list(ok.columns) == FINDING_COLUMNS
    assert ok.set_index("model_id")["reason"].to_dict() == {"a/x": "non_chat_task", "a/y": "ok"}
    assert ok.set_index("model_id")["blocked"].to_dict() == {"a/x": True, "a/y": False}
    failed = diagnose(catalog, probes, run_ok=False)
    assert not failed["blocked"].any()


def test_diagnose_uses_route_checks_for_the_same_target():
    catalog = pd.DataFrame([_catalog_row("a/x")])
    probes = pd.DataFrame([
        _probe_row("a/x", "p", 400, "http_error"),
        _probe_row("a/x", "", 200, "chat", kind="route", route_for="p", model_string="a/x"),
    ])
    row = diagnose(catalog, probes).iloc[0]
    assert row["reason"] == "route_mismatch" and not row["blocked"]
    assert row["working_route"] == "a/x" and "'a/x'" in row["message"]


def test_model_missing_from_catalog_is_judged_on_the_probe_alone():
    probes = pd.DataFrame([_probe_row("ghost/m", "p", 404, "http_error")])
    row = diagnose(pd.DataFrame([_catalog_row("a/x")]), probes).iloc[0]
    assert row["reason"] == "not_found" and "not in catalog" in row["detail"]


def _result(status, outcome="http_error", code=None, message=None, model_id="org/m"):
    from analysis.probe import ProbeResult

    return ProbeResult(model_id, "p", f"{model_id}:p", "u", "primary", status, outcome, code, message, 1.0, 1, [],
                       "t", "t")


@pytest.mark.parametrize("results, expected", [
    ([_result(404, code="not_found", message="Not Found"), _result(410)], "endpoint_error"),
    ([_result(None, "connection"), _result(None, "connection")], "endpoint_error"),
    ([_result(403), _result(403)], "auth_error"),
    # a 404 that names the model is about the model, not the endpoint
    ([_result(404, code="model_not_found"), _result(404, code="not_found", message="Not Found")], None),
    ([_result(404, message="Model org/m does not exist"), _result(410)], None),
    ([_result(404, message="gone [param=model]"), _result(410)], None),
    ([_result(None, "timeout"), _result(None, "connection")], None),
    ([_result(403), _result(200, "chat")], None),
    ([], None),
])
def test_canary_verdict(results, expected):
    from analysis.diagnose import canary_verdict

    verdict = canary_verdict(results)
    assert (verdict[0] if verdict else None) == expected


@pytest.mark.parametrize("code, message, expected", [
    ("model_not_supported", "The model does not support chat messages", "not_supported"),
    (None, "stream is not supported for this model", "not_supported"),
    (None, "max_tokens must be at least 32 for reasoning models", "probe_error"),
    ("invalid_request_error", "bad value [param=temperature]", "probe_error"),
    ("model_not_supported", "not supported [param=model]", "not_supported"),
])
def test_probe_error_needs_a_request_parameter_not_a_model_refusal(code, message, expected):
    assert classify(facts(400, error_code=code, error_message=message)).reason == expected
