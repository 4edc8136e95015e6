"""Incremental re-scans (--changed-only) and the spending limit (--budget-usd), against the simulator."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pandas as pd
import pytest

from analysis.devtools.simulator import synthetic_scenario
from analysis.pipeline.budget import Budget, request_cost
from analysis.pipeline.incremental import select_changed
from analysis.pipeline.targets import Target
from analysis.store import open_store

from .helpers import FAST_FLAGS, reset_stats, run_cli, sim_stats

# The simulator lists every live route at USD 0.1 in / 0.3 out per million tokens.
ANSWER_USD = request_cost((0.1, 0.3), 16)


def _scan(server, store, *extra: str):
    return run_cli("scan", "--hub-url", server.url, "--router-url", server.router_url, "--store", str(store),
                   *FAST_FLAGS, *extra)


def _scenario(n: int = 12):
    scenario = synthetic_scenario(n, 1)
    # phase 1: one model gets a new commit, one loses its live mapping; canaries are the 3 most downloaded (0-2)
    scenario.models[5]["phases"] = {"1": {"lastModified": "2026-06-01T00:00:00.000Z"}}
    staged = dict(scenario.models[7]["providers"][0], status="staging")
    scenario.models[7]["phases"] = {"1": {"providers": [staged]}}
    return scenario


def test_changed_only_probes_the_changed_and_the_canaries_and_carries_the_rest(make_sim, tmp_path):
    server = make_sim(_scenario())
    store = tmp_path / "rca.sqlite"
    assert _scan(server, store).returncode == 0
    httpx.post(f"{server.url}/_sim/phase", params={"n": 1})
    reset_stats(server)

    result = _scan(server, store, "--changed-only")
    assert result.returncode == 0, result.stderr
    # the canaries, the new commit and the mapping that went to staging (its refusal also gets a route check)
    asked = {model.split(":")[0] for model in sim_stats(server)["requests"]}
    assert asked == {f"bench-org/model-{i:06d}" for i in (0, 1, 2, 5, 7)}
    with open_store(store, readonly=True) as db:
        findings = db.findings(2).set_index("model_id")
    assert len(findings) == 12
    carried = findings[findings["carried"].astype(bool)]
    assert sorted(carried.index) == [f"bench-org/model-{i:06d}" for i in (3, 4, 6, 8, 9, 10, 11)]
    assert all("carried from run 1" in note for note in carried["note"])
    assert "--changed-only: probing" in result.stderr

    reset_stats(server)
    stale = _scan(server, store, "--changed-only", "--max-age", "0s")
    assert stale.returncode == 0, stale.stderr
    with open_store(store, readonly=True) as db:
        assert not db.findings(3)["carried"].astype(bool).any()
        targets = len(db.targets(3))
    asked = sim_stats(server)["requests"]
    assert len({model for model in asked if model.endswith(":hf-inference")}) == targets  # all older than 0 s


def test_selection_probes_transient_stale_new_and_changed_targets_only():
    now = datetime(2026, 12, 2, tzinfo=timezone.utc)
    previous = pd.DataFrame([
        {"model_id": "a", "provider": "p", "reason": "not_found", "checked_at": (now - timedelta(hours=1)).isoformat()},
        {"model_id": "b", "provider": "p", "reason": "timeout", "checked_at": (now - timedelta(hours=1)).isoformat()},
        {"model_id": "c", "provider": "p", "reason": "ok", "checked_at": (now - timedelta(days=2)).isoformat()},
    ])
    catalog = pd.DataFrame({"model_id": ["a", "b", "c", "d"], "last_modified": ["x"] * 4,
                            "mapping": [{"p": {"status": "live"}}] * 4, "in_router_list": [True] * 4,
                            "pipeline_tag": ["text-generation"] * 4})
    targets = [Target(m, "p", f"{m}:p") for m in "abcd"]
    selection = select_changed(targets, catalog, catalog, previous, 1, now=now)
    assert [t.model_id for t in selection.probe] == ["b", "c", "d"]  # transient, stale, new
    assert list(selection.carried["model_id"]) == ["a"] and selection.carried["carried"].all()
    assert selection.why == {"changed": 0, "transient": 1, "stale": 1, "new": 1, "canary": 0}
    # a file or openai catalog has no change facts: only age applies
    moved = catalog.assign(last_modified=["y"] * 4)
    assert [t.model_id for t in select_changed(targets, moved, catalog, previous, 1, now=now).probe] == \
        ["a", "b", "c", "d"]
    assert [t.model_id for t in select_changed(targets, moved, catalog, previous, 1, now=now,
                                               catalog_facts=False).probe] == ["b", "c", "d"]


def test_budget_stops_before_the_estimate_passes_it_and_resume_finishes(make_sim, tmp_path):
    server = make_sim(synthetic_scenario(20, 1))
    store = tmp_path / "rca.sqlite"
    budget = 7.5 * ANSWER_USD  # seven answers fit, the eighth would pass it
    result = _scan(server, store, "--budget-usd", repr(budget))
    assert result.returncode == 3, result.stderr
    assert "--budget-usd" in result.stderr and "scan --resume 1 --store" in result.stderr
    sent = sim_stats(server)["chat_requests"]
    assert sent == 7 and sent * ANSWER_USD <= budget
    with open_store(store, readonly=True) as db:
        assert db.get_run(1).status == "incomplete"
    assert run_cli("export", "blocklist", "--store", str(store)).returncode == 3  # nothing to publish yet

    again = run_cli("scan", "--resume", "1", "--store", str(store), "--budget-usd", "1")
    assert again.returncode == 0, again.stderr
    assert sim_stats(server)["chat_requests"] == 20  # each target once in all
    with open_store(store, readonly=True) as db:
        run = db.get_run(1)
        assert run.status == "ok" and len(db.findings(1)) == 20


def test_budget_counts_only_answers_and_unpriced_routes_as_free():
    budget = Budget(10 * ANSWER_USD, {("a", "p"): (0.1, 0.3)}, 16)
    targets = [Target("a", "p", "a:p")] * 12
    assert budget.affordable(targets) == 10 and not budget.fits(targets)
    budget.spend.record("a", "p", "a:p", answered=False)  # a 429 or a refusal is not billed
    assert budget.spent_usd == 0
    budget.spend.record("a", "p", "a:p", answered=True)
    assert budget.affordable(targets) == 9
    assert budget.fits([Target("b", "q", "b:q")] * 1000) and budget.unpriced == {"b:q"}


def test_a_run_stores_the_usage_the_router_reported_and_its_estimated_spend(make_sim, tmp_path):
    from analysis.outputs import views

    server = make_sim(synthetic_scenario(20, 1))  # every answer reports usage 5 prompt + 1 completion tokens
    store = tmp_path / "rca.sqlite"
    stopped = _scan(server, store, "--budget-usd", repr(7.5 * ANSWER_USD))
    assert stopped.returncode == 3
    with open_store(store, readonly=True) as db:
        first = db.get_run(1)
    assert (first.prompt_tokens, first.completion_tokens) == (7 * 5, 7 * 1)
    finished = run_cli("scan", "--resume", "1", "--store", str(store), "--budget-usd", "1")
    assert finished.returncode == 0 and "Estimated spend $" in finished.stdout
    with open_store(store, readonly=True) as db:
        run = db.get_run(1)
        figures = views.kpis(views.load_run(db, 1))
    answers = sim_stats(server)["chat_requests"]
    assert answers == 20 and (run.prompt_tokens, run.completion_tokens) == (answers * 5, answers * 1)
    assert run.spent_usd == pytest.approx(answers * (5 * 0.1 + 1 * 0.3) / 1_000_000)  # both invocations
    assert run.unpriced_answers == 0
    assert figures["spend"].startswith("Estimated spend $0.000016 (100 prompt + 20 completion tokens")


def test_usage_is_read_only_from_a_well_formed_report():
    from analysis.pipeline.probe import usage_of

    assert usage_of(b'{"usage": {"prompt_tokens": 12, "completion_tokens": 3}}') == (12, 3)
    for body in (b'{"usage": {"prompt_tokens": "12", "completion_tokens": 3}}', b'{"usage": null}', b"[]",
                 b'{"usage": {"prompt_tokens": true, "completion_tokens": 1}}', b"not json", b"\xff\xfe",
                 b'{"usage": {"prompt_tokens": -1, "completion_tokens": 1}}'):
        assert usage_of(body) is None


def test_the_budget_learns_a_long_prompt_and_bounds_a_bare_route_by_its_dearest_provider():
    pricing = {("a", "p"): (1.0, 1.0), ("a", "q"): (3.0, 3.0)}
    budget = Budget(1.0, pricing, 16, experiment_max_tokens=4096)
    bare, routed = Target("a", "", "a"), Target("a", "p", "a:p")
    assert budget.upper_bound([bare]) == pytest.approx((20 * 3.0 + 16 * 3.0) / 1e6)  # the dearest provider
    before = budget.upper_bound([routed])
    budget.spend.record("a", "p", "a:p", answered=True, usage=(45, 1))  # a chat template of 45 tokens
    assert budget.spend.prompt_bound == 45 and budget.upper_bound([routed]) > before
    assert budget.spend.counted_usd == pytest.approx((45 + 16) / 1e6)  # the bound, not the 46 reported tokens
    assert budget.upper_bound([routed], 4096) == pytest.approx((45 + 4096) / 1e6)  # an experiment's own budget
