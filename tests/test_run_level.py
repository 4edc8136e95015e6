"""Run-level faults are decided from the run, never from one model (taxonomy v2), end to end against the simulator.

Account faults (a provider switched off, a token without permission, a token revoked mid-scan) never block
anything; a fault of one provider in a scan of several leaves the run partial, judges the others and carries the
faulted provider's blocklist forward.
"""

from __future__ import annotations

import sqlite3

import pytest

from analysis import cli
from analysis.devtools.simulator import Scenario
from analysis.pipeline.scan import run_scan
from analysis.store import open_store

from .helpers import FAST_FLAGS, csv_rows, fast_config, sim_stats

ENABLED = "not supported by any provider you have enabled"


def _model(model_id, providers, routes=None, downloads=10, tag="text-generation"):
    return {"id": model_id, "pipeline_tag": tag, "downloads": downloads,
            "providers": [{"provider": p, "status": "live", "task": "conversational", "latency_ms": 0}
                          for p in providers], "routes": routes or {}}


def two_providers(**router) -> Scenario:
    """12 models on together and novita; one refused everywhere (blocked), the rest healthy."""
    models = [_model(f"org/m{i:02d}", ["together", "novita"], downloads=1000 - i) for i in range(11)]
    models.append(_model("org/gone", ["together", "novita"], {"*": {"kind": "error", "status": 404,
                                                                     "code": "model_not_found",
                                                                     "message": "Model org/gone does not exist"}}))
    return Scenario(name="two", provider_order=["together", "novita"], router={"latency_scale": 1, **router},
                    models=models)


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_canary_refused_as_not_enabled_is_an_account_fault(make_sim, tmp_path, capsys):
    server = make_sim(two_providers())
    store = tmp_path / "rca.sqlite"
    code, out, err = run(capsys, "scan", "--hub-url", server.url, "--router-url", f"{server.url}/noproviders/v1",
                         "--provider", "together", "--store", str(store), *FAST_FLAGS)
    assert code == 3
    assert "endpoint_error" in err and "switched off in your Hugging Face settings" in err
    with open_store(store) as s:
        findings = s.findings(1)
        run_row = s.get_run(1)
    assert run_row.status == "failed" and not findings["blocked"].any()
    assert set(findings["reason"]) == {"endpoint_error"}
    assert sim_stats(server)["chat_requests"] == 3  # the canaries only: nobody else was probed


def test_a_token_without_the_inference_permission_is_auth_error(make_sim, store_path):
    server = make_sim(two_providers())
    with open_store(store_path) as store:
        outcome = run_scan(fast_config(server, provider="together", router_url=f"{server.url}/noperm/v1"), store)
        findings = store.findings(outcome.run_id)
    assert outcome.exit_code == 3 and outcome.failure_reason == "auth_error"
    assert "lacks the Inference Providers permission" in outcome.message
    assert not findings["blocked"].any()


def test_one_provider_switched_off_leaves_the_run_partial_and_carries_its_blocklist(make_sim, tmp_path, capsys):
    store = tmp_path / "rca.sqlite"
    healthy = make_sim(two_providers())
    code, _, err = run(capsys, "scan", "--hub-url", healthy.url, "--router-url", healthy.router_url, "--provider",
                       "all", "--store", str(store), "--route-checks", "0", *FAST_FLAGS)
    assert code == 0, err
    switched_off = make_sim(two_providers(disabled_providers=["novita"]))
    code, out, err = run(capsys, "scan", "--hub-url", switched_off.url, "--router-url", switched_off.router_url,
                         "--provider", "all", "--store", str(store), "--route-checks", "0", *FAST_FLAGS)
    assert code == 3
    assert "run 2 partial" in out and "endpoint_error: every canary of provider novita was refused" in err
    with open_store(store) as s:
        run_row = s.get_run(2)
        findings = s.findings(2).set_index(["model_id", "provider"])
    assert run_row.status == "partial" and set(run_row.faulted) == {"novita"}
    novita = findings.xs("novita", level="provider")
    together = findings.xs("together", level="provider")
    # together was judged as usual
    assert together.loc["org/gone", "reason"] == "not_found" and together.loc["org/gone", "blocked"]
    assert (together.drop("org/gone")["reason"] == "ok").all()
    # novita was not judged: no novita model is newly blocked, and last run's block is carried, marked as such
    assert novita.loc["org/m00", "reason"] == "endpoint_error" and not novita["blocked"].drop("org/gone").any()
    assert novita.loc["org/gone", "blocked"] and novita.loc["org/gone", "carried"]
    assert "carried from run 1" in novita.loc["org/gone", "note"]
    # the blocklist of the partial run holds the judged provider and the carried rows: nothing was unblocked
    code, out, err = run(capsys, "export", "blocklist", "--store", str(store))
    assert code == 0, err
    rows = {(r["model_id"], r["provider"]) for r in csv_rows(out)}
    assert rows == {("org/gone", "together"), ("org/gone", "novita")}


def test_a_provider_excluded_on_purpose_gives_an_ok_run(make_sim, store_path):
    server = make_sim(two_providers(disabled_providers=["novita"]))
    with open_store(store_path) as store:
        outcome = run_scan(fast_config(server, provider="all,-novita", route_checks=0), store)
        findings = store.findings(outcome.run_id)
    assert outcome.status == "ok" and outcome.exit_code == 0
    assert set(findings["provider"]) == {"together"}


def test_a_token_revoked_mid_scan_is_run_level_by_the_majority_rule(make_sim, store_path):
    models = [_model(f"org/ok{i}", ["p"], downloads=1000 - i) for i in range(3)]
    models += [_model(f"org/m{i:02d}", ["p"], {"*": {"kind": "error", "status": 401, "shape": "string",
                                                     "message": "Invalid credentials in Authorization header"}})
               for i in range(12)]
    server = make_sim(Scenario(name="revoked", provider_order=["p"], router={"latency_scale": 1}, models=models))
    with open_store(store_path) as store:
        outcome = run_scan(fast_config(server, provider="p"), store)
        findings = store.findings(outcome.run_id)
    assert outcome.exit_code == 3 and outcome.failure_reason == "auth_error"
    assert not findings["blocked"].any()
    assert set(findings["reason"]) == {"ok", "auth_error"}


def test_a_majority_refusal_is_run_level_only_if_the_canaries_now_fail_the_same_way(make_sim, store_path):
    refusal = {"kind": "error", "status": 400, "code": "model_not_supported", "param": "model",
               "message": "The requested model is not supported by provider 'p'."}
    # The canaries answer once, then are refused like the others: the route broke mid-scan.
    canary = {"kind": "chat", "times": 1, "then": refusal}
    models = [_model(f"org/ok{i}", ["p"], {"*": canary}, downloads=1000 - i) for i in range(3)]
    models += [_model(f"org/m{i:02d}", ["p"], {"*": refusal}) for i in range(12)]
    server = make_sim(Scenario(name="broke", provider_order=["p"], router={"latency_scale": 1}, models=models))
    with open_store(store_path) as store:
        outcome = run_scan(fast_config(server, provider="p", route_checks=0), store)
        findings = store.findings(outcome.run_id)
        probes = store.probes(outcome.run_id)
    assert outcome.exit_code == 3 and outcome.failure_reason == "endpoint_error"
    assert not findings["blocked"].any()
    assert (probes["kind"] == "majority_recheck").sum() == 3
    assert findings[findings["reason"] != "ok"]["error_signature"].nunique() == 1


def test_a_majority_refusal_with_healthy_canaries_is_judged(make_sim, store_path):
    refusal = {"kind": "error", "status": 400, "code": "model_not_supported", "param": "model",
               "message": "The requested model is not supported by provider 'p'."}
    models = [_model(f"org/ok{i}", ["p"], downloads=1000 - i) for i in range(3)]
    models += [_model(f"org/m{i:02d}", ["p"], {"*": refusal}) for i in range(12)]
    server = make_sim(Scenario(name="many", provider_order=["p"], router={"latency_scale": 1}, models=models))
    with open_store(store_path) as store:
        outcome = run_scan(fast_config(server, provider="p", route_checks=0), store)
        findings = store.findings(outcome.run_id)
    assert outcome.status == "ok" and outcome.exit_code == 0
    assert (findings["reason"] == "not_supported").sum() == 12 and findings["blocked"].sum() == 12


def test_a_transient_canary_is_probed_again_once(make_sim, store_path):
    flaky = {"kind": "error", "status": 503, "times": 3}  # the probe's own retries see 503, the recheck does not
    models = [_model("org/flaky", ["p"], {"*": flaky}, downloads=1000)]
    models += [_model(f"org/m{i}", ["p"], {"*": {"kind": "error", "status": 500}}, downloads=900 - i)
               for i in range(2)]
    server = make_sim(Scenario(name="flaky", provider_order=["p"], router={"latency_scale": 1}, models=models))
    with open_store(store_path) as store:
        outcome = run_scan(fast_config(server, provider="p"), store)
        probes = store.probes(outcome.run_id)
    rechecks = probes[probes["kind"] == "canary_recheck"]
    assert sorted(rechecks["model_id"]) == ["org/flaky", "org/m0", "org/m1"]
    assert outcome.status == "ok"  # canaries failing transiently are not run-level


def test_taxonomy_version_is_stored_and_a_version_change_holds_back_fail_on(make_sim, tmp_path, capsys):
    server = make_sim(two_providers())
    store = tmp_path / "rca.sqlite"
    args = ["scan", "--hub-url", server.url, "--router-url", server.router_url, "--provider", "together",
            "--store", str(store), "--route-checks", "0", "--fail-on", "new-blocked", *FAST_FLAGS]
    assert run(capsys, *args)[0] == 1  # a first run compares against an empty blocklist
    with open_store(store) as s:
        assert s.get_run(1).taxonomy_version == 2
    db = sqlite3.connect(store)
    db.execute("UPDATE runs SET taxonomy_version = 1")
    db.execute("DELETE FROM findings WHERE model_id = 'org/gone'")  # as if v1 had not blocked it
    db.commit()
    db.close()
    code, _, err = run(capsys, *args)
    assert code == 0 and "another taxonomy version" in err
    code, out, err = run(capsys, "diff", "--store", str(store))
    assert code == 0 and "taxonomy version 1 -> 2" in err


@pytest.mark.parametrize("spec, error", [("all,together", "cannot be combined"), ("together,-novita", "only")])
def test_provider_exclusions_need_all(tmp_path, capsys, spec, error):
    code, _, err = run(capsys, "scan", "--provider", spec, "--store", str(tmp_path / "s.sqlite"))
    assert code == 2 and error in err


def test_scan_plan_sends_no_chat_request_creates_no_run_and_prices_from_the_router(make_sim, tmp_path, capsys):
    import json

    server = make_sim(two_providers())
    store = tmp_path / "rca.sqlite"
    code, out, err = run(capsys, "scan", "--plan", "--format", "json", "--hub-url", server.url, "--router-url",
                         server.router_url, "--provider", "together", "--store", str(store), *FAST_FLAGS)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["targets"] == 12 and plan["requests"]["probes"] == 12 and plan["canaries"] == 3
    # the simulator lists 0.1 / 0.3 USD per million tokens; 20 prompt and 16 output tokens a request
    assert plan["priced_targets"] == 12 and plan["unpriced_targets"] == 0
    assert plan["cost_usd"] == pytest.approx(12 * (20 * 0.1 + 16 * 0.3) / 1e6, rel=1e-3)
    assert sim_stats(server)["chat_requests"] == 0 and not store.exists()
    # after a real scan, the plan uses its observed rates
    assert run(capsys, "scan", "--hub-url", server.url, "--router-url", server.router_url, "--provider", "together",
               "--store", str(store), *FAST_FLAGS)[0] == 0
    code, out, _ = run(capsys, "scan", "--plan", "--hub-url", server.url, "--router-url", server.router_url,
                       "--provider", "together", "--store", str(store), *FAST_FLAGS)
    assert code == 0 and "observed in the previous run" in out and "route_checks" in out
    with open_store(store, readonly=True) as s:
        assert len(s.runs()) == 1


class _Receiver:
    """A local webhook receiver (real HTTP on loopback) that records every message and answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        import http.server
        import threading

        received: list[dict] = []
        self.received = received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                import json

                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    servers: list[_Receiver] = []

    def start(status: int = 200) -> _Receiver:
        servers.append(_Receiver(status))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_notify_posts_one_message_per_run_on_transitions_only(make_sim, tmp_path, capsys, receiver, monkeypatch):
    hook = receiver()
    server = make_sim(two_providers())
    store = tmp_path / "rca.sqlite"
    monkeypatch.setenv("HF_TOKEN", "hf_" + "NotifyFakeToken9QzXv7Lp2Wm9Kt4Rj8Hn")
    args = ["scan", "--hub-url", server.url, "--router-url", server.router_url, "--provider", "together",
            "--store", str(store), "--route-checks", "0", "--notify", hook.url, "--app-url", "http://rca.local",
            *FAST_FLAGS]
    assert run(capsys, *args)[0] == 0
    assert len(hook.received) == 1  # a first run: org/gone is newly blocked
    first = hook.received[0]
    assert first["newly_blocked"] == [{"model_id": "org/gone", "provider": "together", "reason": "not_found"}]
    assert "1 newly blocked" in first["text"] and first["link"] == "http://rca.local/?run=1"
    assert run(capsys, *args)[0] == 0
    assert len(hook.received) == 1  # nothing changed: quiet
    assert run(capsys, *args, "--notify-always")[0] == 0
    assert len(hook.received) == 2
    for message in hook.received:
        assert "NotifyFakeToken" not in str(message)
    with open_store(store, readonly=True) as s:
        assert hook.url not in str(s.runs()["settings"].tolist())  # a notify URL is a secret: never stored


def test_a_failing_receiver_is_retried_and_never_fails_the_scan(make_sim, tmp_path, capsys, receiver):
    hook = receiver(status=500)
    server = make_sim(two_providers())
    code, _, err = run(capsys, "scan", "--hub-url", server.url, "--router-url", server.router_url, "--provider",
                       "together", "--store", str(tmp_path / "rca.sqlite"), "--notify", hook.url, *FAST_FLAGS)
    assert code == 0
    assert len(hook.received) == 4 and "did not take the message (HTTP 500, 4 attempts)" in err
    assert hook.url not in err


def test_a_notification_escapes_upstream_text_for_chat_webhooks():
    from analysis.outputs.notify import slack_escape

    assert slack_escape("<!channel> & <http://x|y>\n\x1b[2J") == "&lt;!channel&gt; &amp; &lt;http://x|y&gt;\\x0a\\x1b[2J"


def test_a_new_run_level_failure_is_notified_once(make_sim, tmp_path, capsys, receiver):
    hook = receiver()
    server = make_sim(two_providers())
    args = ["scan", "--hub-url", server.url, "--router-url", f"{server.url}/retired/v1", "--provider", "together",
            "--store", str(tmp_path / "rca.sqlite"), "--notify", hook.url, *FAST_FLAGS]
    assert run(capsys, *args)[0] == 3
    assert run(capsys, *args)[0] == 3
    assert len(hook.received) == 1  # the first failure, not its repetition
    assert hook.received[0]["status"] == "failed" and "FAILED at run level (endpoint_error)" in hook.received[0]["text"]
