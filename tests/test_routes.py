"""Route checks and the canary guard, end to end against the simulator."""

from __future__ import annotations

import pytest

from analysis.devtools.simulator import Scenario, synthetic_scenario
from analysis.pipeline.scan import run_scan
from analysis.reports.render import md_escape
from analysis.store import open_store

from .helpers import FAST_FLAGS, fast_config, run_cli, sim_stats


def _model(model_id, providers, routes=None, **extra):
    return {"id": model_id, "pipeline_tag": "text-generation", "downloads": extra.pop("downloads", 10),
            "providers": [{"provider": p, "status": s, "task": "conversational", "latency_ms": 0}
                          for p, s in providers], "routes": routes or {}, **extra}


def route_scenario() -> Scenario:
    return Scenario(name="routes", provider_order=["together", "novita"], router={"latency_scale": 1}, models=[
        # refused on our route, fine when the router chooses: fix the route, do not block
        _model("org/bare-works", [("together", "live")],
               {"together": {"kind": "error", "status": 404, "code": "model_not_found"}}),
        # refused on together and bare, fine on novita (another live mapping)
        _model("org/novita-works", [("together", "live"), ("novita", "live")],
               {"together": {"kind": "error", "status": 400, "code": "model_not_supported", "param": "model"},
                "bare": {"kind": "error", "status": 400, "code": "model_not_supported", "param": "model"}}),
        # refused everywhere: a real not_found
        _model("org/gone", [("together", "live"), ("novita", "live")],
               {"*": {"kind": "error", "status": 404, "code": "model_not_found"}}),
        _model("org/healthy", [("together", "live")], downloads=1000),
        _model("org/healthy-2", [("together", "live")], downloads=900),
    ])


def test_route_checks_turn_a_routing_fault_into_route_mismatch(make_sim, store_path):
    server = make_sim(route_scenario())
    with open_store(store_path) as store:
        outcome = run_scan(fast_config(server, provider="together"), store)
        findings = store.findings(outcome.run_id).set_index("model_id")
        probes = store.probes(outcome.run_id)
    assert findings.loc["org/bare-works", "reason"] == "route_mismatch"
    assert findings.loc["org/bare-works", "working_route"] == "org/bare-works"
    assert "'org/bare-works'" in findings.loc["org/bare-works", "message"]
    assert findings.loc["org/novita-works", "reason"] == "route_mismatch"
    assert findings.loc["org/novita-works", "working_route"] == "org/novita-works:novita"
    assert not findings.loc[["org/bare-works", "org/novita-works"], "blocked"].any()
    assert findings.loc["org/gone", "reason"] == "not_found" and findings.loc["org/gone", "blocked"]
    # every route attempt is recorded as evidence, and checks stop at the first working route
    routes = probes[probes["kind"] == "route"]
    assert sorted(routes[routes["model_id"] == "org/novita-works"]["model_string"]) == [
        "org/novita-works", "org/novita-works:novita"]
    assert list(routes[routes["model_id"] == "org/bare-works"]["model_string"]) == ["org/bare-works"]
    assert sorted(routes[routes["model_id"] == "org/gone"]["model_string"]) == ["org/gone", "org/gone:novita"]
    assert set(routes["route_for"]) == {"together"}


def test_route_checks_can_be_limited_or_disabled(make_sim, store_path):
    server = make_sim(route_scenario())
    with open_store(store_path) as store:
        one = run_scan(fast_config(server, provider="together", route_checks=1), store)
        none = run_scan(fast_config(server, provider="together", route_checks=0), store)
        limited = store.findings(one.run_id).set_index("model_id")
        disabled = store.findings(none.run_id).set_index("model_id")
        assert (store.probes(none.run_id)["kind"] == "route").sum() == 0
    assert limited.loc["org/novita-works", "reason"] == "not_supported"  # only the bare id was tried
    assert limited.loc["org/bare-works", "reason"] == "route_mismatch"
    assert disabled.loc["org/bare-works", "reason"] == "not_found"


def test_canaries_default_to_most_downloaded_live_models_and_are_probed_once(make_sim, store_path):
    server = make_sim(route_scenario())
    with open_store(store_path) as store:
        outcome = run_scan(fast_config(server, provider="together", route_checks=0), store)
        run = store.get_run(outcome.run_id)
    assert run.canaries["together"][:2] == ["org/healthy:together", "org/healthy-2:together"]
    attempts = sim_stats(server)["attempts"]
    assert attempts["org/healthy:together"] == 1 and attempts["org/healthy-2:together"] == 1


def test_all_canaries_refused_is_endpoint_error(sim, tmp_path):
    store = tmp_path / "rca.sqlite"
    result = run_cli("scan", "--hub-url", sim.url, "--router-url", f"{sim.url}/wrongpath/v1",
                     "--store", str(store), *FAST_FLAGS)
    assert result.returncode == 3, result.stderr
    assert "endpoint_error" in result.stderr and "canary" in result.stderr
    with open_store(store) as s:
        run = s.get_run(1)
        findings = s.findings(1)
        probes = s.probes(1)
    assert run.status == "failed" and run.failure_reason == "endpoint_error"
    assert len(probes) == len(run.canaries["hf-inference"]) == 3  # stopped after the canaries
    assert not findings["blocked"].any()
    blocklist = run_cli("export", "blocklist", "--store", str(store))
    assert blocklist.returncode == 3 and blocklist.stdout == ""  # no successful run: nothing published


def test_explicit_canary_outside_the_catalog(make_sim, store_path):
    scenario = route_scenario()
    scenario.models.append(_model("org/elsewhere", [("novita", "live")]))
    server = make_sim(scenario)
    with open_store(store_path) as store:
        outcome = run_scan(fast_config(server, provider="together", canaries=["org/elsewhere"]), store)
        findings = store.findings(outcome.run_id)
        probes = store.probes(outcome.run_id)
    # an outside canary is evidence, not a finding
    assert "org/elsewhere" not in set(findings["model_id"])
    assert list(probes[probes["kind"] == "canary"]["model_string"]) == ["org/elsewhere:together"]


@pytest.mark.parametrize("route", ["suffix", "bare"])
def test_bare_route_option(make_sim, store_path, route):
    server = make_sim(synthetic_scenario(3, 0, provider="together"))
    with open_store(store_path) as store:
        outcome = run_scan(fast_config(server, provider="together", route=route), store)
        strings = set(store.findings(outcome.run_id)["model_string"])
    suffix = ":together" if route == "suffix" else ""
    assert strings == {f"bench-org/model-{i:06d}{suffix}" for i in range(3)}


def test_unreachable_router_is_run_level_not_a_streak_of_failures(sim, tmp_path):
    store = tmp_path / "rca.sqlite"
    for _ in range(2):
        result = run_cli("scan", "--hub-url", sim.url, "--router-url", "http://127.0.0.1:9/v1", "--store",
                         str(store), "--retries", "0", "--persistent-min-hours", "0", *FAST_FLAGS)
        assert result.returncode == 3, result.stderr
        assert "endpoint_error" in result.stderr and "unreachable" in result.stderr
    with open_store(store) as s:
        runs = s.runs()
        assert list(runs["status"]) == ["failed", "failed"]
        assert s.scope_history("hub", "hf-inference").empty  # nothing enters history
    assert run_cli("export", "blocklist", "--store", str(store)).returncode == 3


def test_the_same_404_on_every_canary_is_run_level(make_sim, store_path):
    # Taxonomy v2 inverts v1's rule: known-good canaries refused alike (one signature, ids aside) say the setup
    # is wrong, not the models.
    scenario = Scenario(name="small", provider_order=["p"], router={"latency_scale": 1}, models=[
        _model("org/a", [("p", "live")], {"*": {"kind": "error", "status": 404, "code": "model_not_found",
                                                 "message": "Model org/a does not exist"}}),
        _model("org/b", [("p", "live")], {"*": {"kind": "error", "status": 404, "code": "model_not_found",
                                                 "message": "Model org/b does not exist"}}),
    ])
    server = make_sim(scenario)
    with open_store(store_path) as store:
        outcome = run_scan(fast_config(server, provider="p", route_checks=0), store)
        findings = store.findings(outcome.run_id)
    assert outcome.exit_code == 3 and outcome.failure_reason == "endpoint_error"
    assert "refused the same way (404 model_not_found Model <model> does not exist)" in outcome.message
    assert set(findings["reason"]) == {"endpoint_error"} and not findings["blocked"].any()


def test_every_canary_forbidden_is_an_auth_error(make_sim, store_path):
    scenario = synthetic_scenario(10, 0, provider="p")
    for model in scenario.models:
        model["routes"] = {"*": {"kind": "error", "status": 403, "message": "This token lacks permission"}}
    server = make_sim(scenario)
    with open_store(store_path) as store:
        outcome = run_scan(fast_config(server, provider="p"), store)
        findings = store.findings(outcome.run_id)
    assert outcome.exit_code == 3 and outcome.failure_reason == "auth_error"
    assert "permission" in outcome.message
    assert set(findings["reason"]) == {"auth_error"} and not findings["blocked"].any()
    assert all("not judged" in note for note in findings["note"])


def test_a_failed_runs_model_report_never_says_block(sim, tmp_path):
    store = tmp_path / "rca.sqlite"
    result = run_cli("scan", "--hub-url", sim.url, "--router-url", f"{sim.url}/wrongpath/v1", "--store", str(store),
                     *FAST_FLAGS)
    assert result.returncode == 3
    assert "no (run failed)" in result.stdout and " yes" not in result.stdout
    with open_store(store) as s:
        canary = s.findings(1).iloc[0]["model_id"]
    report = run_cli("report", "model", "--model", canary, "--run", "1", "--store", str(store), "--out",
                     str(tmp_path / "out"))
    assert report.returncode == 0, report.stderr
    text = next((tmp_path / "out").glob("*.md")).read_text()
    assert md_escape("endpoint_error") in text  # as the Markdown writes it: endpoint\_error
    assert "block it" not in text.lower()
