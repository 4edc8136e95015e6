"""The probe layer against real HTTP failure modes served by the simulator."""

from __future__ import annotations

import asyncio

import pytest

from analysis.devtools.simulator import Scenario, synthetic_scenario
from analysis.pipeline.probe import ProbeSettings, classify_body, parse_error_body, probe_targets
from analysis.pipeline.targets import Target

from .helpers import sim_stats


def behaviour_scenario(behaviours: dict[str, dict], token: str | None = None) -> Scenario:
    models = [{"id": f"case/{name}", "pipeline_tag": "text-generation",
               "providers": [{"provider": "p", "status": "live", "task": "conversational", "latency_ms": 0}],
               "routes": {"*": spec}} for name, spec in behaviours.items()]
    return Scenario(name="probe-cases", models=models, provider_order=["p"], token=token, router={"latency_scale": 1})


def probe(server, names, **settings):
    values = dict(router_url=server.router_url, concurrency=4, timeout=1.0, retries=2, backoff=0.01,
                  retry_after_cap=0.5)
    values.update(settings)
    targets = [Target(f"case/{n}", "p", f"case/{n}:p") for n in names]
    results = asyncio.run(probe_targets(targets, ProbeSettings(**values)))
    return {r.model_id.split("/")[1]: r for r in results}


def test_concurrency_is_bounded_and_reached(make_sim):
    server = make_sim(synthetic_scenario(60, 40))
    targets = [Target(f"bench-org/model-{i:06d}", "hf-inference", f"bench-org/model-{i:06d}:hf-inference")
               for i in range(60)]
    results = asyncio.run(probe_targets(targets, ProbeSettings(router_url=server.router_url, concurrency=5)))
    assert len(results) == 60 and all(r.outcome == "chat" for r in results)
    assert sim_stats(server)["peak_in_flight"] == 5


def test_a_cookie_an_answer_sets_never_rides_along_with_the_next_probe(make_sim):
    scenario = synthetic_scenario(12, 0)
    scenario.router["set_cookie"] = "upstream_session=abc123; Path=/"
    server = make_sim(scenario)
    targets = [Target(f"bench-org/model-{i:06d}", "hf-inference", f"bench-org/model-{i:06d}:hf-inference")
               for i in range(12)]
    results = asyncio.run(probe_targets(targets, ProbeSettings(router_url=server.router_url, concurrency=2)))
    assert {r.outcome for r in results} == {"chat"}
    stats = sim_stats(server)
    assert stats["chat_requests"] == 12 and stats["cookies_seen"] == 0


@pytest.mark.parametrize("concurrency", [1, 3, 17])
def test_concurrency_never_exceeds_setting(make_sim, concurrency):
    server = make_sim(synthetic_scenario(40, 20))
    targets = [Target(f"bench-org/model-{i:06d}", "hf-inference", f"bench-org/model-{i:06d}:hf-inference")
               for i in range(40)]
    asyncio.run(probe_targets(targets, ProbeSettings(router_url=server.router_url, concurrency=concurrency)))
    assert 1 <= sim_stats(server)["peak_in_flight"] <= concurrency


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 410, 422])
def test_refusals_are_never_retried(make_sim, status):
    server = make_sim(behaviour_scenario({"x": {"kind": "error", "status": status, "code": "c"}}))
    result = asyncio.run(probe_targets([Target("case/x", "p", "case/x:p")],
                                       ProbeSettings(router_url=server.router_url, retries=3, backoff=0.01)))[0]
    assert result.attempts == 1 and result.http_status == status
    assert sim_stats(server)["attempts"] == {"case/x:p": 1}


@pytest.mark.parametrize("spec, outcome", [
    ({"kind": "error", "status": 500}, "http_error"),
    ({"kind": "html", "status": 502}, "http_error"),
    ({"kind": "error", "status": 429}, "http_error"),
    ({"kind": "reset"}, "connection"),
    ({"kind": "slow"}, "timeout"),
])
def test_transient_failures_use_exactly_retries_plus_one_attempts(make_sim, spec, outcome):
    server = make_sim(behaviour_scenario({"x": spec}))
    result = probe(server, ["x"], retries=2, timeout=0.5)["x"]
    assert result.outcome == outcome
    assert result.attempts == 3 == len(result.attempt_log)
    assert sim_stats(server)["attempts"]["case/x:p"] == 3


def test_retry_after_is_honoured_and_capped(make_sim):
    server = make_sim(behaviour_scenario({
        "short": {"kind": "error", "status": 503, "retry_after": 0.2, "times": 1},
        "huge": {"kind": "error", "status": 429, "retry_after": 3600},
    }))
    results = probe(server, ["short", "huge"], retries=1, retry_after_cap=0.3)
    short = results["short"]
    assert short.outcome == "chat" and short.attempts == 2
    assert short.attempt_log[0].retry_after == 0.2 and short.attempt_log[0].waited_s == 0.2
    huge = results["huge"]
    # A Retry-After beyond the cap is not waited out 0.3 s at a time: the model's retries stop at once.
    assert huge.http_status == 429 and huge.attempts == 1 and huge.attempt_log[0].waited_s is None
    assert "Retry-After 3600s advertised, beyond the cap" in huge.note


def test_429_without_retry_after_backs_off(make_sim):
    server = make_sim(behaviour_scenario({"x": {"kind": "error", "status": 429, "times": 2}}))
    result = probe(server, ["x"], retries=2, backoff=0.05)["x"]
    assert result.outcome == "chat" and result.attempts == 3
    waits = [a.waited_s for a in result.attempt_log[:2]]
    assert all(w is not None and 0.02 <= w <= 0.2 for w in waits)  # 0.05 * 2^n with jitter in [0.5, 1.5)


@pytest.mark.parametrize("spec, outcome, code", [
    ({"kind": "not_chat"}, "invalid", "not_chat_completion"),
    ({"kind": "empty_choices"}, "invalid", "not_chat_completion"),
    ({"kind": "bad_json"}, "invalid", "not_chat_completion"),
    ({"kind": "invalid_utf8"}, "invalid", "not_chat_completion"),
    ({"kind": "oversized", "size_bytes": 2_000_000}, "invalid", "oversized_body"),
    ({"kind": "stall"}, "timeout", "timeout"),
    ({"kind": "close_mid_body"}, "connection", "RemoteProtocolError"),
    ({"kind": "empty_reply"}, "chat", None),
])
def test_body_faults(make_sim, spec, outcome, code):
    server = make_sim(behaviour_scenario({"x": spec}))
    result = probe(server, ["x"], retries=0, timeout=0.5, max_body_bytes=64 * 1024)["x"]
    assert result.outcome == outcome
    assert result.error_code == code


def test_stall_reports_status_seen_before_the_timeout(make_sim):
    server = make_sim(behaviour_scenario({"x": {"kind": "stall"}}))
    result = probe(server, ["x"], retries=0, timeout=0.3)["x"]
    assert result.http_status == 200 and "after HTTP 200" in result.error_message


def test_error_bodies_are_parsed_and_trimmed():
    code, message, param = parse_error_body(
        b'{"error":{"message":"The requested model \'x\' is not supported","type":"invalid_request_error",'
        b'"param":"model","code":"model_not_supported"}}', "application/json")
    assert (code, param) == ("model_not_supported", "model") and "not supported" in message
    code, message, _ = parse_error_body(b"<html><head><title>502 Bad Gateway</title></head>" + b"x" * 5000,
                                        "text/html")
    assert code == "html_error_page" and message == "HTML page: 502 Bad Gateway"
    _, message, _ = parse_error_body(b'{"error":"' + b"y" * 2000 + b'"}', "application/json")
    assert len(message) <= 300
    _, message, _ = parse_error_body(b'{"error": "bad \xff bytes"}', "application/json")
    assert "\ufffd" in message


def test_classify_body():
    assert classify_body(b'{"choices":[{"message":{"role":"assistant","content":"OK"}}]}') == (True, "")
    assert classify_body(b'{"choices":[]}')[0] is False
    assert classify_body(b'[{"generated_text":"x"}]')[0] is False
    ok, note = classify_body(b'{"choices":[{"message":{"role":"assistant","content":""}}]}')
    assert ok and "max-tokens" in note


def test_request_shape_and_token(make_sim):
    server = make_sim(behaviour_scenario({"x": {"kind": "chat"}}, token="tok-123456"))
    result = probe(server, ["x"], token="tok-123456")["x"]
    assert result.outcome == "chat" and result.model_string == "case/x:p"
    assert result.url == f"{server.router_url}/chat/completions"
    assert server.app.auth_headers_seen == {"Bearer tok-123456"}
    assert "tok-123456" not in repr(result.as_row())
    wrong = probe(server, ["x"], token="nope")["x"]
    assert wrong.http_status == 401


def test_no_single_answer_stops_the_other_probes(make_sim):
    # Whether a 401 is run-level is decided from the run (canaries, majority), never by the probe layer.
    server = make_sim(synthetic_scenario(12, 0))
    server.app.scenario.token = "right"
    targets = [Target(f"bench-org/model-{i:06d}", "hf-inference", f"bench-org/model-{i:06d}:hf-inference")
               for i in range(12)]
    results = asyncio.run(probe_targets(targets, ProbeSettings(router_url=server.router_url, token="wrong",
                                                               concurrency=4)))
    assert len(results) == 12 and {r.http_status for r in results} == {401}


def test_a_configured_proxy_falls_back_to_httpx_pooled_clients(make_sim, monkeypatch):
    from analysis.pipeline.transport import KeepAliveTransport, lean_transport

    server = make_sim(behaviour_scenario({"x": {"kind": "chat"}}))
    assert isinstance(lean_transport(server.router_url), KeepAliveTransport)
    # The simulator parses absolute-form targets, so it can stand in as the forward proxy too.
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert lean_transport(server.router_url) is None
    result = probe(server, ["x"])["x"]
    assert result.outcome == "chat" and result.attempts == 1


@pytest.mark.parametrize("body, is_chat", [
    (b'data: {"object":"chat.completion.chunk","choices":[{"delta":{"content":"O"}}]}\n\n', True),
    (b': keep-alive\nevent: message\ndata: {"id":"x","choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n', True),
    (b'data: {"error":{"message":"overloaded"},"choices":[]}\n\n', False),
    (b'data: [DONE]\n\n', False),
    (b'data: {"choices":[{"text":"not a chat chunk"}]}\n\n', False),
])
def test_sse_bodies_are_read_by_their_first_data_event(body, is_chat):
    from analysis.pipeline.probe import classify_body

    assert classify_body(body, "text/event-stream")[0] is is_chat


def test_a_streamed_experiment_answered_in_one_piece_still_counts():
    """A provider that ignores stream=true and sends the whole completion as JSON answered: not a refusal."""
    import http.server
    import json
    import threading

    from analysis.pipeline.probe import Experiment, RequestChange, run_experiments

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = json.dumps({"object": "chat.completion", "choices": [
                {"message": {"role": "assistant", "content": "OK"}, "finish_reason": "stop"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = ProbeSettings(router_url=f"http://127.0.0.1:{server.server_address[1]}/v1", concurrency=1)
        target = Target("org/m", "p", "org/m:p")
        [result] = asyncio.run(run_experiments([Experiment(target, RequestChange(max_tokens=4096, stream=True))],
                                               settings))
    finally:
        server.shutdown()
        server.server_close()
    assert result.outcome == "chat" and result.settings == "max_tokens=4096; stream=true"
    assert "in one piece" in result.note
