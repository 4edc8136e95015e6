"""History, the persistent-failure policy, alternatives, diff, --fail-on and prune."""

from __future__ import annotations

import csv
import io
import json

import httpx
import pandas as pd
import pytest

from analysis.devtools.simulator import Scenario
from analysis.pipeline.alternatives import family, parameter_count, suggest_alternatives
from analysis.pipeline.history import PersistencePolicy, apply_persistence, summarise_history
from analysis.pipeline.scan import run_scan
from analysis.store import open_store

from .helpers import FAST_FLAGS, csv_rows, fast_config, run_cli

# --------------------------------------------------------------------------- pure


def _hist(rows):
    return pd.DataFrame(rows, columns=["run_id", "run_started_at", "model_id", "provider", "reason"])


def test_summarise_history():
    hist = _hist([
        (1, "2026-01-01T00:00:00Z", "a", "p", "ok"),
        (2, "2026-01-01T06:00:00Z", "a", "p", "timeout"),
        (3, "2026-01-01T12:00:00Z", "a", "p", "upstream_error"),
        (1, "2026-01-01T00:00:00Z", "b", "p", "not_found"),
        (2, "2026-01-01T06:00:00Z", "b", "p", "ok"),
        (3, "2026-01-01T12:00:00Z", "b", "p", "not_found"),
        (4, "2026-01-01T18:00:00Z", "b", "p", "ok"),
    ])
    summary = summarise_history(hist).set_index("model_id")
    assert summary.loc["a", "consecutive_failures"] == 2
    assert summary.loc["a", "first_failed_at"] == "2026-01-01T06:00:00Z"
    assert summary.loc["a", "last_ok_at"] == "2026-01-01T00:00:00Z"
    assert summary.loc["a", "flaps"] == 2
    assert summary.loc["b", "consecutive_failures"] == 0 and pd.isna(summary.loc["b", "first_failed_at"])
    assert summary.loc["b", "flaps"] == 3
    assert summarise_history(hist, flap_window=2).set_index("model_id").loc["b", "flaps"] == 1


def _finding(reason, model="a"):
    return pd.DataFrame([{"model_id": model, "provider": "p", "reason": reason, "blocked": False, "predicted": False,
                          "detail": "router 500", "note": "", "action": "wait", "message": "m"}])


@pytest.mark.parametrize("previous, hours, expected", [
    (["timeout", "upstream_error"], 24, "persistent_failure"),  # 3 transient runs over 24 h
    (["timeout", "upstream_error"], 6, "upstream_error"),       # too short a span
    (["upstream_error"], 24, "upstream_error"),                 # only 2 runs
    (["ok", "upstream_error"], 24, "upstream_error"),           # an ok breaks the streak
    (["not_found", "upstream_error"], 24, "upstream_error"),    # a permanent reason is not a transient streak
    (["persistent_failure", "upstream_error"], 24, "persistent_failure"),
])
def test_persistence_policy(previous, hours, expected):
    start = pd.Timestamp("2026-01-01T00:00:00Z")
    rows = []
    for i, reason in enumerate(previous):
        started = (start + pd.Timedelta(hours=hours * i / len(previous))).isoformat()
        rows += [(i + 1, started, "a", "p", reason), (i + 1, started, "b", "p", "ok")]  # b: the healthy rest
    now = (start + pd.Timedelta(hours=hours)).isoformat()
    current = pd.concat([_finding("upstream_error"), _finding("ok", "b")], ignore_index=True)
    out = apply_persistence(current, _hist(rows), now, PersistencePolicy(after=3, min_hours=12))
    assert out.iloc[0]["reason"] == expected
    assert bool(out.iloc[0]["blocked"]) == (expected == "persistent_failure")
    assert out.iloc[1]["reason"] == "ok"


def test_an_outage_never_adds_up_to_a_persistent_failure():
    """Every model transient in every run (router down, DNS, typo): not evidence against any model."""
    start = pd.Timestamp("2026-01-01T00:00:00Z")
    rows = [(i + 1, (start + pd.Timedelta(hours=12 * i)).isoformat(), m, "p", "connection_error")
            for i in range(3) for m in ("a", "b")]
    current = pd.concat([_finding("connection_error"), _finding("connection_error", "b")], ignore_index=True)
    out = apply_persistence(current, _hist(rows), (start + pd.Timedelta(hours=36)).isoformat(),
                            PersistencePolicy(after=3, min_hours=12))
    assert list(out["reason"]) == ["connection_error", "connection_error"] and not out["blocked"].any()
    # and an outage run in the middle of a real streak neither counts nor breaks it
    rows = [(1, start.isoformat(), "a", "p", "timeout"), (1, start.isoformat(), "b", "p", "ok"),
            (2, (start + pd.Timedelta(hours=6)).isoformat(), "a", "p", "timeout"),
            (2, (start + pd.Timedelta(hours=6)).isoformat(), "b", "p", "timeout"),
            (3, (start + pd.Timedelta(hours=12)).isoformat(), "a", "p", "timeout"),
            (3, (start + pd.Timedelta(hours=12)).isoformat(), "b", "p", "ok")]
    current = pd.concat([_finding("timeout"), _finding("ok", "b")], ignore_index=True)
    out = apply_persistence(current, _hist(rows), (start + pd.Timedelta(hours=24)).isoformat(),
                            PersistencePolicy(after=3, min_hours=12))
    assert out.iloc[0]["reason"] == "persistent_failure"


def test_parameter_count_and_family():
    assert parameter_count("meta-llama/Llama-3.1-8B-Instruct") == 8
    assert parameter_count("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B") == 1.5
    assert parameter_count("mistralai/Mixtral-8x7B-Instruct-v0.1") == 56
    assert parameter_count("BAAI/bge-small-en-v1.5") is None
    assert parameter_count("Qwen/Qwen2.5-0.5B-Instruct") == 0.5
    assert family("meta-llama/Meta-Llama-3-8B-Instruct") == "llama"
    assert family("Qwen/QwQ-32B") == "qwq"


def test_alternatives_rank_family_then_size_then_downloads():
    findings = pd.DataFrame([
        {"model_id": "meta-llama/Llama-3.1-8B-Instruct", "pipeline_tag": "text-generation", "reason": "not_found",
         "blocked": True},
        {"model_id": "meta-llama/Llama-3.1-70B-Instruct", "pipeline_tag": "text-generation", "reason": "ok",
         "blocked": False},
        {"model_id": "NousResearch/Hermes-3-Llama-3.1-8B", "pipeline_tag": "text-generation", "reason": "ok",
         "blocked": False},
        {"model_id": "Qwen/Qwen2.5-7B-Instruct", "pipeline_tag": "text-generation", "reason": "ok", "blocked": False},
        {"model_id": "google/gemma-2-9b-it", "pipeline_tag": "text-generation", "reason": "ok", "blocked": False},
        {"model_id": "Qwen/Qwen2-VL-7B-Instruct", "pipeline_tag": "image-text-to-text", "reason": "ok",
         "blocked": False},
        {"model_id": "google/gemma-3-1b-it", "pipeline_tag": "text-generation", "reason": "timeout", "blocked": False},
    ])
    catalog = pd.DataFrame({"model_id": findings["model_id"], "downloads": [1, 5, 2, 9, 8, 7, 6]})
    alternatives = suggest_alternatives(findings, catalog)
    # same family first (Hermes-3-Llama 8B is closer in size than Llama 70B), then size, then downloads;
    # never another pipeline tag, never a failing model, nothing for unblocked rows
    assert alternatives[0] == ["NousResearch/Hermes-3-Llama-3.1-8B", "meta-llama/Llama-3.1-70B-Instruct",
                               "google/gemma-2-9b-it"]
    assert all(a == [] for a in alternatives[1:])


# --------------------------------------------------------------------------- end to end


def flaky_scenario() -> Scenario:
    """phase 0-2: org/flaky answers 500; phase 3: it recovers.  org/dropped is refused from phase 1 on."""
    def model(model_id, **extra):
        return {"id": model_id, "pipeline_tag": "text-generation", "downloads": 5,
                "providers": [{"provider": "p", "status": "live", "task": "conversational", "latency_ms": 0}], **extra}

    return Scenario(name="flaky", provider_order=["p"], router={"latency_scale": 1}, models=[
        model("org/flaky", routes={"*": {"kind": "error", "status": 500}}, phases={"3": {"routes": {}}}),
        model("org/dropped", phases={"1": {"routes": {"*": {"kind": "error", "status": 404}}}}),
        model("org/steady", downloads=100),
    ])


def _phase(server, n):
    httpx.post(f"{server.url}/_sim/phase", params={"n": n})


def test_persistent_failure_after_three_runs_then_cleared_by_one_ok(make_sim, store_path):
    server = make_sim(flaky_scenario())
    reasons = []
    with open_store(store_path) as store:
        for phase in (0, 0, 0, 3):
            _phase(server, phase)
            outcome = run_scan(fast_config(server, provider="p", retries=0, persistent_min_hours=0), store)
            row = store.findings(outcome.run_id).set_index("model_id").loc["org/flaky"]
            reasons.append((row["reason"], bool(row["blocked"]), int(row["consecutive_failures"])))
        history = store.findings(outcome.run_id).set_index("model_id").loc["org/flaky"]
    assert reasons == [("upstream_error", False, 1), ("upstream_error", False, 2), ("persistent_failure", True, 3),
                       ("ok", False, 0)]
    assert history["flaps"] == 2 and pd.notna(history["last_ok_at"])


def test_min_hours_keeps_a_fast_streak_transient(make_sim, store_path):
    server = make_sim(flaky_scenario())
    with open_store(store_path) as store:
        for _ in range(3):
            outcome = run_scan(fast_config(server, provider="p", retries=0), store)  # default 12 h
        assert store.findings(outcome.run_id).set_index("model_id").loc["org/flaky", "reason"] == "upstream_error"


def test_fail_on_new_blocked_and_diff(make_sim, tmp_path):
    server = make_sim(flaky_scenario())
    store = tmp_path / "rca.sqlite"
    scan = ["scan", "--hub-url", server.url, "--router-url", server.router_url, "--provider", "p", "--store",
            str(store), "--retries", "0", "--fail-on", "new-blocked", *FAST_FLAGS]
    first = run_cli(*scan)
    assert first.returncode == 0, first.stderr  # nothing blocked yet
    again = run_cli(*scan)
    assert again.returncode == 0 and "nothing newly blocked" in again.stderr
    _phase(server, 1)
    grew = run_cli(*scan)
    assert grew.returncode == 1, grew.stderr
    assert "org/dropped" in grew.stderr and "newly blocked" in grew.stderr
    same = run_cli(*scan)
    assert same.returncode == 0

    text = run_cli("diff", "--store", str(store), "--from", "2", "--to", "3")
    assert text.returncode == 0 and "1 newly blocked" in text.stdout and "org/dropped" in text.stdout
    as_json = json.loads(run_cli("diff", "--store", str(store), "--from", "2", "--to", "3", "--format",
                                 "json").stdout)
    assert as_json["changes"] == [{"change": "newly_blocked", "model_id": "org/dropped", "provider": "p",
                                   "from_reason": "ok", "to_reason": "not_found", "from_blocked": False,
                                   "to_blocked": True}]
    _phase(server, 3)
    run_cli(*scan)
    recovered = list(csv.DictReader(io.StringIO(run_cli("diff", "--store", str(store), "--format", "csv").stdout)))
    assert {r["model_id"]: r["change"] for r in recovered} == {"org/flaky": "recovered"}
    bad = run_cli("diff", "--store", str(store), "--from", "99")
    assert bad.returncode == 2 and "no run 99" in bad.stderr


def test_exports_carry_history_and_alternatives(sample_store):
    result = run_cli("export", "findings", "--store", str(sample_store), "--format", "json")
    rows = json.loads(result.stdout)["rows"]
    assert {"alternatives", "first_failed_at", "last_ok_at", "consecutive_failures", "flaps"} <= set(rows[0])
    blocked = [r for r in rows if r["blocked"] and r["pipeline_tag"] == "text-generation"]
    assert any(r["alternatives"] for r in blocked)
    blocklist = csv_rows(run_cli("export", "blocklist", "--store", str(sample_store)).stdout)
    assert "alternatives" in blocklist[0]


def test_prune_keeps_the_newest_runs(make_sim, tmp_path):
    server = make_sim(flaky_scenario())
    store = tmp_path / "rca.sqlite"
    with open_store(store) as s:
        for _ in range(4):
            run_scan(fast_config(server, provider="p", retries=0), s)
    result = run_cli("prune", "--store", str(store), "--keep", "2", "--vacuum")
    assert result.returncode == 0 and "deleted 2 run(s): 1, 2" in result.stdout
    with open_store(store) as s:
        assert list(s.runs()["id"]) == [3, 4]
        assert s.db.execute("SELECT COUNT(*) FROM probes WHERE run_id < 3").fetchone()[0] == 0
        assert s.db.execute("SELECT COUNT(*) FROM catalog WHERE run_id < 3").fetchone()[0] == 0
