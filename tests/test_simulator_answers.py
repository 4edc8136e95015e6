"""The simulator's real-router answers, over real HTTP on loopback.

Request-conditioned behaviours (``accepts``), SSE streams, the new kinds and error
shapes, the account-level answers (providers switched off, a token without the
Inference Providers permission) and the request log in ``/_sim/stats``.  These are
the answers the probe and the diagnosis are tested against, so each one is pinned
here as the wire sees it.
"""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest

from analysis.devtools.simulator import Scenario, SimulatorServer, default_scenario

from .helpers import sim_stats

PROMPT = [{"role": "user", "content": "Say OK"}]
PARTS = [{"role": "user", "content": [{"type": "text", "text": "Say OK"}]}]
NOT_ENABLED = "The requested model '{}' is not supported by any provider you have enabled."


def _model(model_id: str, routes: dict | None = None, providers: tuple[str, ...] = ("hf-inference",)) -> dict:
    return {"id": model_id, "pipeline_tag": "text-generation", "downloads": 10,
            "providers": [{"provider": name, "status": "live", "task": "conversational", "latency_ms": 0}
                          for name in providers],
            **({"routes": routes} if routes is not None else {})}


def _scenario(*models: dict, **router) -> dict:
    return {"name": "answers", "provider_order": ["together", "hf-inference"], "router": router,
            "models": list(models)}


def _chat(server: SimulatorServer, model: str, mount: str = "", **fields) -> httpx.Response:
    body = {"model": model, "messages": PROMPT, "max_tokens": 16, "stream": False}
    body.update(fields)
    body = {k: v for k, v in body.items() if v is not None}
    return httpx.post(f"{server.url}{mount}/v1/chat/completions", json=body, timeout=10)


def _sse_data(text: str) -> list[str]:
    return [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]


# --------------------------------------------------------------------------- accepts


ACCEPTS_CASES = {
    # name: (accepts, refused request fields, accepted request fields)
    "min_budget, max_tokens": ({"min_budget": 256}, {"max_tokens": 16}, {"max_tokens": 4096}),
    "min_budget, exactly": ({"min_budget": 256}, {"max_tokens": 255}, {"max_tokens": 256}),
    "min_budget, max_completion_tokens": ({"min_budget": 256}, {"max_tokens": None, "max_completion_tokens": 16},
                                          {"max_tokens": None, "max_completion_tokens": 300}),
    "min_budget, max_new_tokens": ({"min_budget": 256}, {"max_tokens": None},
                                   {"max_tokens": None, "max_new_tokens": 300}),
    "max_budget": ({"max_budget": 2}, {"max_tokens": 16}, {"max_tokens": 2}),
    "max_budget, no budget": ({"max_budget": 2}, {"max_tokens": 3}, {"max_tokens": None}),
    "stream": ({"stream": True}, {"stream": False}, {"stream": True}),
    "param": ({"param": "max_completion_tokens"}, {"max_tokens": 16, "max_completion_tokens": 16},
              {"max_tokens": None, "max_completion_tokens": 16}),
    "content_parts": ({"content_parts": True}, {"messages": PROMPT}, {"messages": PARTS}),
    "all predicates must hold": ({"min_budget": 256, "stream": True}, {"max_tokens": 4096, "stream": False},
                                 {"max_tokens": 4096, "stream": True}),
}


@pytest.mark.parametrize("case", list(ACCEPTS_CASES))
def test_accepts_predicate_both_ways(make_sim, case):
    accepts, refused, accepted = ACCEPTS_CASES[case]
    refusal = {"kind": "error", "status": 400, "param": "max_tokens", "message": "refused", "accepts": accepts}
    server = make_sim(_scenario(_model("org/m", {"*": refusal})))

    first = _chat(server, "org/m:hf-inference", **refused)
    second = _chat(server, "org/m:hf-inference", **accepted)

    assert first.status_code == 400 and first.json()["error"]["message"] == "refused"
    assert second.status_code == 200
    if accepted.get("stream"):
        assert second.headers["content-type"] == "text/event-stream"
    else:
        assert second.json()["choices"][0]["message"]["content"] == "OK"


def test_accepts_serves_then_and_combines_with_times(make_sim):
    # times is checked first: past it, `then` applies whatever the request; within it, accepts decides.
    behaviour = {"kind": "error", "status": 400, "message": "stream only", "times": 2,
                 "accepts": {"stream": True}, "then": {"kind": "empty_reply"}}
    server = make_sim(_scenario(_model("org/m", {"*": behaviour})))

    refused = _chat(server, "org/m:hf-inference")
    accepted = _chat(server, "org/m:hf-inference", stream=True)
    past_times = _chat(server, "org/m:hf-inference")

    assert refused.status_code == 400
    assert accepted.status_code == 200 and accepted.headers["content-type"] == "text/event-stream"
    assert past_times.status_code == 200 and past_times.json()["choices"][0]["message"]["content"] == ""


# --------------------------------------------------------------------------- streaming


def test_streamed_chat_answer_is_sse_chunks(make_sim):
    server = make_sim(_scenario(_model("org/m"), stream_chunks=3))

    with httpx.Client(timeout=10) as client:
        streamed = client.post(f"{server.router_url}/chat/completions",
                               json={"model": "org/m:hf-inference", "messages": PROMPT, "stream": True})
        # The streamed body closes its connection; the same client goes on with a new one.
        after = client.post(f"{server.router_url}/chat/completions",
                            json={"model": "org/m:hf-inference", "messages": PROMPT})

    assert streamed.status_code == 200
    assert streamed.headers["content-type"] == "text/event-stream"
    assert streamed.headers["transfer-encoding"] == "chunked"
    data = _sse_data(streamed.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert [chunk["choices"][0]["delta"].get("content") for chunk in chunks] == ["O", "O", "O", None]
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks] == [None, None, None, "stop"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert after.status_code == 200 and after.json()["object"] == "chat.completion"


def test_stream_settings_on_the_behaviour_win_over_the_router(make_sim):
    then = {"kind": "chat", "stream_chunks": 6, "stream_chunk_delay_ms": 100}
    behaviour = {"kind": "error", "status": 400, "accepts": {"stream": True}, "then": then}
    server = make_sim(_scenario(_model("org/m", {"*": behaviour}), stream_chunks=2))

    started = time.monotonic()
    answer = _chat(server, "org/m:hf-inference", stream=True)
    elapsed = time.monotonic() - started

    contents = [json.loads(item)["choices"][0]["delta"].get("content") for item in _sse_data(answer.text)[:-1]]
    assert contents == ["O"] * 6 + [None]
    assert elapsed >= 0.7  # 8 events, 100 ms apart: the delays were served, whatever else was slow


def _open_streams(server: SimulatorServer) -> int:
    return sim_stats(server)["open_streams"]


def test_client_closing_after_the_first_chunk_does_not_wait_for_the_stream(caplog):
    # A full stream here takes 5 delays of 30 s; the client reads one chunk and leaves.
    scenario = Scenario.from_dict(_scenario(_model("org/m"), stream_chunk_delay_ms=30_000))
    caplog.set_level(logging.WARNING, logger="asyncio")
    with SimulatorServer(scenario) as server:
        started = time.monotonic()
        read: list[str] = []
        with httpx.Client(timeout=60) as client:
            with client.stream("POST", f"{server.router_url}/chat/completions",
                               json={"model": "org/m:hf-inference", "messages": PROMPT, "stream": True}) as answer:
                for line in answer.iter_lines():
                    if line.startswith("data: "):
                        read.append(line)
                        streaming = _open_streams(server)  # leaving the loop closes the connection
                        break
        # The server notices the close on its own schedule: wait for it, well inside the 30 s
        # it would take to reach the next chunk if it did not listen for the client leaving.
        deadline = time.monotonic() + 10
        while _open_streams(server) and time.monotonic() < deadline:
            time.sleep(0.01)
        stopped = _open_streams(server)
        elapsed = time.monotonic() - started
        # The server goes on serving after the client went away mid-stream.
        assert _chat(server, "org/m:hf-inference").status_code == 200

    assert len(read) == 1 and json.loads(read[0][len("data: "):])["choices"][0]["delta"]["content"] == "O"
    assert streaming == 1 and stopped == 0
    assert elapsed < 15
    assert not [record for record in caplog.records if record.name == "asyncio"]


# --------------------------------------------------------------------------- new kinds


def test_sse_body_despite_stream_false(make_sim):
    server = make_sim(_scenario(_model("org/m", {"*": {"kind": "sse_body"}})))

    answer = _chat(server, "org/m:hf-inference", stream=False)

    assert answer.status_code == 200 and answer.headers["content-type"] == "text/event-stream"
    data = _sse_data(answer.text)
    assert data[-1] == "[DONE]" and len(data) == 4 + 2
    assert json.loads(data[0])["object"] == "chat.completion.chunk"


@pytest.mark.parametrize("behaviour, field, content", [
    ({"kind": "reasoning_reply"}, "reasoning_content", ""),
    ({"kind": "reasoning_reply", "field": "reasoning"}, "reasoning", ""),
    ({"kind": "reasoning_reply", "content": None}, "reasoning_content", None),
])
def test_reasoning_reply(make_sim, behaviour, field, content):
    server = make_sim(_scenario(_model("org/m", {"*": behaviour})))

    answer = _chat(server, "org/m:hf-inference")

    assert answer.status_code == 200
    choice = answer.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == content and "content" in choice["message"]
    assert choice["message"][field]
    other = {"reasoning", "reasoning_content"} - {field}
    assert not other & set(choice["message"])


def test_reasoning_reply_streamed(make_sim):
    server = make_sim(_scenario(_model("org/m", {"*": {"kind": "reasoning_reply"}})))

    answer = _chat(server, "org/m:hf-inference", stream=True)

    chunks = [json.loads(item) for item in _sse_data(answer.text)[:-1]]
    assert all(chunk["choices"][0]["delta"].get("reasoning_content") for chunk in chunks[:-1])
    assert not any(chunk["choices"][0]["delta"].get("content") for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("status", [200, 400])
def test_bad_encoding(make_sim, status):
    behaviour = {"kind": "bad_encoding"} if status == 200 else {"kind": "bad_encoding", "status": status}
    server = make_sim(_scenario(_model("org/m", {"*": behaviour})))

    with httpx.Client(timeout=10) as client:
        with client.stream("POST", f"{server.router_url}/chat/completions",
                           json={"model": "org/m:hf-inference", "messages": PROMPT}) as answer:
            raw = b"".join(answer.iter_raw())
    with pytest.raises(httpx.DecodingError):  # a client that trusts the header cannot read it
        _chat(server, "org/m:hf-inference")

    assert answer.status_code == status and answer.headers["content-encoding"] == "gzip"
    assert not raw.startswith(b"\x1f\x8b") and json.loads(raw)["object"] == "chat.completion"


# --------------------------------------------------------------------------- error shapes


@pytest.mark.parametrize("behaviour, content_type, body", [
    ({"kind": "error", "status": 400, "message": "stream only", "param": None, "code": None},
     "application/json",
     {"error": {"message": "stream only", "type": "invalid_request_error", "param": None, "code": None}}),
    ({"kind": "error", "status": 400, "shape": "object", "message": "m", "param": "max_tokens",
      "code": "unsupported_parameter", "extra": {"request_id": "r1"}},
     "application/json",
     {"error": {"message": "m", "type": "invalid_request_error", "param": "max_tokens",
                "code": "unsupported_parameter"}, "request_id": "r1"}),
    ({"kind": "error", "status": 401, "shape": "string", "message": "Invalid credentials in Authorization header"},
     "application/json", {"error": "Invalid credentials in Authorization header"}),
    ({"kind": "error", "status": 422, "shape": "tgi", "message": "Input validation error: too long"},
     "application/json", {"error": "Input validation error: too long", "error_type": "validation"}),
    ({"kind": "error", "status": 503, "shape": "string", "message": "Model org/m is currently loading",
      "extra": {"estimated_time": 20.0}},
     "application/json", {"error": "Model org/m is currently loading", "estimated_time": 20.0}),
    ({"kind": "error", "status": 503, "shape": "tgi", "message": "loading", "extra": {"estimated_time": 20.0}},
     "application/json", {"error": "loading", "error_type": "validation", "estimated_time": 20.0}),
    ({"kind": "error", "status": 502, "shape": "text", "message": "upstream connect error"},
     "text/plain", "upstream connect error"),
])
def test_error_shapes(make_sim, behaviour, content_type, body):
    server = make_sim(_scenario(_model("org/m", {"*": behaviour})))

    answer = _chat(server, "org/m:hf-inference")

    assert answer.status_code == behaviour["status"]
    assert answer.headers["content-type"] == content_type
    assert (answer.text if content_type == "text/plain" else answer.json()) == body


@pytest.mark.parametrize("status, reason", [(408, "Request Timeout"), (424, "Failed Dependency")])
def test_new_statuses_have_their_reason_phrase(make_sim, status, reason):
    server = make_sim(_scenario(_model("org/m", {"*": {"kind": "error", "status": status}})))

    answer = _chat(server, "org/m:hf-inference")

    assert answer.status_code == status and answer.reason_phrase == reason
    assert answer.json()["error"]["message"] == reason


# --------------------------------------------------------------------------- account-level answers


@pytest.mark.parametrize("router", [{"enabled_providers": ["together"]}, {"disabled_providers": ["hf-inference"]}])
def test_switched_off_provider_is_refused_before_the_model(make_sim, router):
    # Both models answer on every route by their own behaviour; the account setting still wins.
    served = _model("org/served", {"*": {"kind": "chat"}}, providers=("hf-inference", "together"))
    only_hf = _model("org/only-hf", {"*": {"kind": "chat"}})
    server = make_sim(_scenario(served, only_hf, **router))

    off = _chat(server, "org/served:hf-inference")
    on = _chat(server, "org/served:together")
    bare_on = _chat(server, "org/served")
    bare_off = _chat(server, "org/only-hf")

    assert off.status_code == 400
    assert off.json() == {"error": {"message": NOT_ENABLED.format("org/served"), "type": "invalid_request_error",
                                    "param": "model", "code": "model_not_supported"}}
    assert on.status_code == 200 and bare_on.status_code == 200
    assert bare_off.status_code == 400 and bare_off.json()["error"]["message"] == NOT_ENABLED.format("org/only-hf")


def test_without_account_settings_every_provider_is_on(make_sim):
    unmapped = _model("org/unmapped", {"*": {"kind": "chat"}}, providers=())
    server = make_sim(_scenario(_model("org/m", {"*": {"kind": "chat"}}), unmapped))

    assert _chat(server, "org/m:hf-inference").status_code == 200
    assert _chat(server, "org/m:together").status_code == 200  # the model's own behaviour decides
    assert _chat(server, "org/unmapped").status_code == 200


def test_noproviders_mount(make_sim):
    server = make_sim(_scenario(_model("org/m"), _model("org/n", providers=("together",))))

    refused = _chat(server, "org/m:hf-inference", mount="/noproviders")
    bare = _chat(server, "org/n", mount="/noproviders")
    listed = httpx.get(f"{server.url}/noproviders/v1/models").json()
    normal = httpx.get(f"{server.router_url}/models").json()

    assert refused.status_code == 400
    assert refused.json() == {"error": {"message": NOT_ENABLED.format("org/m"), "type": "invalid_request_error",
                                        "param": "model", "code": "model_not_supported"}}
    assert bare.status_code == 400 and bare.json()["error"]["message"] == NOT_ENABLED.format("org/n")
    assert listed == normal and {entry["id"] for entry in listed["data"]} == {"org/m", "org/n"}
    assert sim_stats(server)["attempts"] == {"org/m:hf-inference": 1, "org/n": 1}


def test_noperm_mount(make_sim):
    scenario = _scenario(_model("org/m"))
    scenario["token"] = "sim-token"
    server = make_sim(scenario)
    url = f"{server.url}/noperm/v1/chat/completions"
    body = {"model": "org/m:hf-inference", "messages": PROMPT}

    forbidden = httpx.post(url, json=body, headers={"Authorization": "Bearer sim-token"})
    bad_token = httpx.post(url, json=body, headers={"Authorization": "Bearer wrong"})
    normal = httpx.post(f"{server.router_url}/chat/completions", json=body,
                        headers={"Authorization": "Bearer sim-token"})

    assert forbidden.status_code == 403
    assert forbidden.json() == {"error": "This authentication method does not have sufficient permissions to call "
                                         "Inference Providers on behalf of user sim-user"}
    assert bad_token.status_code == 401  # the token is checked first, as on every mount
    assert normal.status_code == 200


# --------------------------------------------------------------------------- request log


def test_request_log_records_every_variant_and_resets(make_sim):
    server = make_sim(_scenario(_model("org/m")))

    _chat(server, "org/m:hf-inference")
    _chat(server, "org/m:hf-inference", max_tokens=4096, stream=True)
    _chat(server, "org/m:hf-inference", max_tokens=None, max_completion_tokens=16, stream=None, messages=PARTS)
    _chat(server, "org/m", mount="/wrongpath")
    requests = sim_stats(server)["requests"]
    httpx.post(f"{server.url}/_sim/reset")
    after_reset = sim_stats(server)["requests"]

    assert requests == {
        "org/m:hf-inference": [
            {"max_tokens": 16, "max_completion_tokens": None, "stream": False, "content_parts": False},
            {"max_tokens": 4096, "max_completion_tokens": None, "stream": True, "content_parts": False},
            {"max_tokens": None, "max_completion_tokens": 16, "stream": None, "content_parts": True},
        ],
        "org/m": [{"max_tokens": 16, "max_completion_tokens": None, "stream": False, "content_parts": False}],
    }
    assert after_reset == {}


# --------------------------------------------------------------------------- default scenario


# model id -> (first probe's status, the changed request that answers, or None when none does)
DEFAULT_V2_CASES = {
    "Qwen/Qwen3-0.6B": (400, {"max_tokens": 4096, "stream": True}),
    "HuggingFaceTB/SmolLM2-360M-Instruct": (422, {"max_tokens": 2}),
    "Qwen/Qwen3-1.7B": (400, {"stream": True}),
    "openai/gpt-oss-20b": (400, {"max_tokens": None, "max_completion_tokens": 16}),
    "Qwen/QwQ-32B-AWQ": (400, None),
    "HuggingFaceH4/starchat2-15b-v0.1": (400, None),
    "bigscience/bloom-1b1": (503, None),
    "NousResearch/Hermes-3-Llama-3.1-8B": (200, None),
    "microsoft/Phi-4-mini-reasoning": (200, None),
    "01-ai/Yi-1.5-9B-Chat": (429, None),
    "upstage/SOLAR-10.7B-Instruct-v1.0": (424, None),
    "lmsys/vicuna-7b-v1.5": (408, None),
    "Nexusflow/Starling-LM-7B-beta": (401, None),
    "meta-llama/Llama-Guard-3-1B": (403, None),
    "mistralai/Mistral-Large-Instruct-2407": (404, None),
}
REPROBES = [{"max_tokens": 4096, "stream": True}, {"max_tokens": 2}, {"stream": True},
            {"max_tokens": None, "max_completion_tokens": 16}, {"messages": PARTS}]


@pytest.fixture(scope="module")
def default_sim():
    with SimulatorServer(default_scenario()) as server:
        yield server


@pytest.mark.parametrize("model_id", list(DEFAULT_V2_CASES))
def test_default_scenario_v2_cases(default_sim, model_id):
    status, fix = DEFAULT_V2_CASES[model_id]

    first = _chat(default_sim, f"{model_id}:hf-inference")
    changed = [_chat(default_sim, f"{model_id}:hf-inference", **fields).status_code for fields in REPROBES]

    assert first.status_code == status
    if fix is not None:
        assert _chat(default_sim, f"{model_id}:hf-inference", **fix).status_code == 200
    elif status != 200:
        assert 200 not in changed  # nothing we could change makes it answer


def test_default_scenario_fault_cases_stay_out_of_the_canaries():
    scenario = default_scenario()
    ids = [model["id"] for model in scenario.models]
    by_downloads = sorted(scenario.models, key=lambda model: model["downloads"], reverse=True)

    assert len(ids) == len(set(ids))
    assert set(DEFAULT_V2_CASES) <= set(ids)
    assert not any(model.get("routes") for model in by_downloads[:20])
    notes = {model["id"]: model.get("note", "") for model in scenario.models}
    assert all(notes[model_id] for model_id in DEFAULT_V2_CASES)
    assert "not evidence" in notes["mistralai/Mistral-Large-Instruct-2407"]


# --------------------------------------------------------------------------- scale and tail settings (opt-in)


def test_a_rate_limit_answers_429_without_retry_after_above_its_rate():
    scenario = _scenario(_model("org/a", providers=("together", "hf-inference")), rate_limits={"together": 3})
    with SimulatorServer(Scenario.from_dict(scenario)) as server:
        answers = [_chat(server, "org/a:together") for _ in range(5)]
        other = [_chat(server, "org/a:hf-inference") for _ in range(5)]
        stats = sim_stats(server)
    # A bucket of one second of requests: 3 pass at once, then the route refuses until it refills.
    assert [r.status_code for r in answers[:3]] == [200, 200, 200]
    refused = [r for r in answers[3:] if r.status_code == 429]
    assert refused and all("retry-after" not in r.headers for r in refused)
    assert refused[0].json()["error"]["code"] == "rate_limit_exceeded"
    assert {r.status_code for r in other} == {200}  # the limit is per route
    assert stats["rate_limited"] == {"together": len(refused)}
    assert stats["chat_by_route"] == {"together": 5, "hf-inference": 5}


def test_lognormal_latency_draws_have_the_stated_median_and_tail():
    from analysis.devtools.simulator import SimulatorApp

    app = SimulatorApp(Scenario.from_dict(_scenario(
        _model("org/a"), latency={"dist": "lognormal", "median_ms": 1000, "p99_ms": 20000, "seed": 3})))
    draws = sorted(app._drawn_latency_ms(f"org/m{i}:p", 1) or 0 for i in range(4000))
    assert 900 <= draws[2000] <= 1100
    assert 15000 <= draws[int(4000 * 0.99)] <= 26000
    # Deterministic per model string and attempt, so benchmark contenders meet the same upstream.
    assert app._drawn_latency_ms("org/m1:p", 1) == app._drawn_latency_ms("org/m1:p", 1)
    assert app._drawn_latency_ms("org/m1:p", 1) != app._drawn_latency_ms("org/m1:p", 2)


def test_a_request_that_never_answers_holds_the_connection_silently():
    scenario = _scenario(_model("org/a"), never_answer={"fraction": 1.0, "per": "model"})
    with SimulatorServer(Scenario.from_dict(scenario)) as server:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v1/chat/completions", timeout=0.3,
                       json={"model": "org/a:hf-inference", "messages": PROMPT})
        assert sim_stats(server)["never_answered"] == 1
