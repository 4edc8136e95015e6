"""End to end: the scan pipeline and the CLI against the simulator, with real SQLite files."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from analysis.devtools.simulator import default_scenario, synthetic_scenario
from analysis.pipeline.scan import run_scan
from analysis.schema import BLOCKLIST_COLUMNS
from analysis.store import open_store

from .helpers import FAST_FLAGS, SECRET_TOKEN, csv_rows, fast_config, run_cli, sim_stats

# The default scenario's hf-inference slice: one or more models per taxonomy row.
EXPECTED_HF_INFERENCE = {
    "HuggingFaceTB/SmolLM3-3B": "ok",
    "meta-llama/Llama-3.2-11B-Vision-Instruct": "ok",
    "katanemo/Arch-Router-1.5B": "ok",
    "BAAI/bge-small-en-v1.5": "non_chat_task",
    "facebook/bart-large-cnn": "non_chat_task",
    "openai-community/gpt2": "non_chat_task",
    "sentence-transformers/all-MiniLM-L6-v2": "non_chat_task",
    "meta-llama/Llama-Guard-3-1B": "gated",
    "mistralai/Mistral-Large-Instruct-2407": "not_found",  # catalog gated alone is no evidence
    "HuggingFaceH4/zephyr-7b-beta": "not_found",
    "ibm-granite/granite-3.3-2b-instruct": "not_found",
    "Qwen/Qwen2.5-1.5B-Instruct": "not_supported",
    "Qwen/Qwen2.5-0.5B-Instruct": "not_supported",
    "microsoft/Phi-3-mini-4k-instruct": "provider_mapping_error",
    "google/gemma-2-27b-it": "provider_mapping_error",
    "Qwen/Qwen3-0.6B": "probe_error",
    "google/gemma-3-1b-it": "rate_limited",
    "tiiuae/falcon-7b-instruct": "timeout",
    "cross-encoder/ms-marco-MiniLM-L6-v2": "timeout",
    "mistralai/Mistral-7B-Instruct-v0.2": "upstream_error",
    "Qwen/Qwen2.5-Coder-1.5B-Instruct": "upstream_error",
    "bigscience/bloomz-560m": "connection_error",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": "invalid_response",
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": "ok",
    "deepset/roberta-base-squad2": "ok",
    # taxonomy v2: real router answers
    "HuggingFaceTB/SmolLM2-360M-Instruct": "probe_error",  # TGI budget limit: works with a budget inside it
    "Qwen/Qwen3-1.7B": "probe_error",  # stream-only
    "openai/gpt-oss-20b": "probe_error",  # wants max_completion_tokens
    "Qwen/QwQ-32B-AWQ": "not_supported",  # refuses the adjusted request too
    "HuggingFaceH4/starchat2-15b-v0.1": "upstream_error",  # endpoint paused (a 400)
    "bigscience/bloom-1b1": "upstream_error",  # currently loading
    "NousResearch/Hermes-3-Llama-3.1-8B": "ok",  # an SSE body despite stream=false
    "microsoft/Phi-4-mini-reasoning": "ok",  # reasoning only, finish_reason length
    "01-ai/Yi-1.5-9B-Chat": "rate_limited",  # Retry-After: 86400
    "upstage/SOLAR-10.7B-Instruct-v1.0": "upstream_error",  # 424
    "lmsys/vicuna-7b-v1.5": "timeout",  # 408
    "Nexusflow/Starling-LM-7B-beta": "upstream_error",  # a 401 for this one model
}


def test_scan_gives_the_expected_reason_for_every_model(make_sim, store_path):
    scenario = default_scenario()
    scenario.hub.update(page_cap=7, rate_limit_pages=[1], rate_limit_reset=0)
    server = make_sim(scenario)
    with open_store(store_path) as store:
        outcome = run_scan(fast_config(server, concurrency=6, hub_limit=1000), store)
        assert outcome.exit_code == 0 and outcome.status == "ok"
        findings = store.findings(outcome.run_id).set_index("model_id")
        catalog = store.catalog(outcome.run_id)
    assert findings["reason"].to_dict() == EXPECTED_HF_INFERENCE
    # complete, no duplicates, despite a page cap far below the limit and a 429
    assert len(catalog) == len(set(catalog["model_id"])) == len(EXPECTED_HF_INFERENCE)
    stats = sim_stats(server)
    assert stats["hub_429s"] == 1 and stats["hub_pages_served"] == -(-len(EXPECTED_HF_INFERENCE) // 7)
    assert stats["peak_in_flight"] <= 6
    assert max(stats["attempts"].values()) <= 3  # retries + 1
    # blocked follows the taxonomy; the SmolLM2 503 was retried into an ok
    assert findings.loc["BAAI/bge-small-en-v1.5", "blocked"]
    assert not findings.loc["google/gemma-3-1b-it", "blocked"]
    assert findings.loc["HuggingFaceTB/SmolLM2-1.7B-Instruct", "attempts"] == 2
    assert "not a chat model" in findings.loc["cross-encoder/ms-marco-MiniLM-L6-v2", "note"]
    arch = findings.loc["katanemo/Arch-Router-1.5B"]
    assert arch["model_string"] == "katanemo/Arch-Router-1.5B:hf-inference"
    assert arch["detail"].startswith("router 200 chat completion")


def test_cli_scan_and_exports(sim, tmp_path):
    store = tmp_path / "rca.sqlite"
    result = run_cli("scan", "--hub-url", sim.url, "--router-url", sim.router_url, "--provider", "hf-inference",
                     "--store", str(store), "--concurrency", "8", "--retries", "1", *FAST_FLAGS)
    assert result.returncode == 0, result.stderr
    assert "non_chat_task" in result.stdout and "blocked" in result.stdout
    assert "Traceback" not in result.stderr

    findings = run_cli("export", "findings", "--store", str(store), "--format", "csv")
    assert findings.returncode == 0, findings.stderr
    rows = csv_rows(findings.stdout)
    assert {r["model_id"]: r["reason"] for r in rows} == EXPECTED_HF_INFERENCE

    out = tmp_path / "out" / "blocklist.csv"
    blocklist = run_cli("export", "blocklist", "--store", str(store), "--format", "csv", "--out", str(out))
    assert blocklist.returncode == 0
    blocked = csv_rows(out.read_text())
    assert list(blocked[0])[: len(BLOCKLIST_COLUMNS)] == BLOCKLIST_COLUMNS
    assert {r["model_id"] for r in blocked} == {m for m, r in EXPECTED_HF_INFERENCE.items()
                                                if r in ("non_chat_task", "gated", "not_found", "not_supported",
                                                         "provider_mapping_error")}

    python = run_cli("export", "blocklist", "--store", str(store), "--format", "python")
    assert python.stdout.startswith("# tool: catalog-rca\n")  # the provenance comment, then the set
    tree = ast.parse(python.stdout)
    assert ast.literal_eval(tree.body[0].value) == {r["model_id"] for r in blocked}

    as_json = run_cli("export", "blocklist", "--store", str(store), "--format", "json", "--run", "1")
    document = json.loads(as_json.stdout)
    assert len(document["rows"]) == len(blocked)
    assert document["provenance"]["run_id"] == 1 and document["provenance"]["kind"] == "blocklist"


def test_wrong_token_exits_3_names_the_token_and_blocks_nothing(make_sim, tmp_path):
    scenario = synthetic_scenario(30, 5)
    scenario.token = "the-right-token-value"
    server = make_sim(scenario)
    store = tmp_path / "rca.sqlite"
    result = run_cli("scan", "--hub-url", server.url, "--router-url", server.router_url, "--store", str(store),
                     *FAST_FLAGS, env={"HF_TOKEN": SECRET_TOKEN})
    assert result.returncode == 3
    assert "HF_TOKEN" in result.stderr and "auth_error" in result.stderr
    assert "Traceback" not in result.stderr
    blocklist = run_cli("export", "blocklist", "--store", str(store))
    assert blocklist.returncode == 3 and blocklist.stdout == ""  # no successful run: nothing published
    assert sim_stats(server)["chat_requests"] == 0  # the Hub refused the token first: nothing was probed
    with open_store(store) as s:
        runs = s.runs()
    assert list(runs["status"]) == ["failed"] and list(runs["failure_reason"]) == ["auth_error"]
    for text in (result.stdout, result.stderr, blocklist.stdout, blocklist.stderr):
        assert SECRET_TOKEN not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET_TOKEN.encode() not in path.read_bytes(), path


def test_missing_token_is_auth_error_too(make_sim, tmp_path):
    scenario = synthetic_scenario(5, 0)
    scenario.token = "needed"
    server = make_sim(scenario)
    result = run_cli("scan", "--hub-url", server.url, "--router-url", server.router_url,
                     "--store", str(tmp_path / "s.sqlite"), *FAST_FLAGS)
    assert result.returncode == 3 and "HF_TOKEN is not set" in result.stderr


@pytest.mark.parametrize("mount, reason", [("retired", "endpoint_error"), ("nocredits", "payment_required")])
def test_run_level_endpoints_exit_3_and_block_nothing(sim, tmp_path, mount, reason):
    store = tmp_path / "rca.sqlite"
    result = run_cli("scan", "--hub-url", sim.url, "--router-url", f"{sim.url}/{mount}/v1", "--store", str(store),
                     *FAST_FLAGS)
    assert result.returncode == 3, result.stderr
    assert reason in result.stderr
    assert "--router-url" in result.stderr or "billing" in result.stderr
    with open_store(store) as s:
        run = s.get_run(1)
        findings = s.findings(1)
    assert run.status == "failed" and run.failure_reason == reason
    assert not findings["blocked"].any()  # (empty when the run stopped before any probe)
    explicit = run_cli("export", "blocklist", "--store", str(store), "--run", "1")
    assert explicit.returncode == 3 and "only a successful probing run feeds a blocklist" in explicit.stderr
    assert explicit.stdout == ""


@pytest.mark.parametrize("args, words", [
    (["scan", "--hub-url", "not a url"], "--hub-url"),
    (["scan", "--router-url", "ftp://x/v1"], "--router-url"),
    (["scan", "--concurrency", "0"], "--concurrency"),
    (["scan", "--provider", "bad;name"], "invalid provider"),
    (["export", "findings", "--store", "/nonexistent/dir/x.sqlite"], "no store"),
    (["export", "findings", "--format", "xml"], "'xml' is not one of"),
])
def test_bad_input_exits_2_with_one_line(args, words, tmp_path):
    if args[0] == "scan":
        args = [*args, "--store", str(tmp_path / "s.sqlite")]
    result = run_cli(*args)
    assert result.returncode == 2
    assert words in result.stderr and "Traceback" not in result.stderr


def test_unknown_provider_exits_2(sim, tmp_path):
    result = run_cli("scan", "--hub-url", sim.url, "--router-url", sim.router_url, "--provider", "nosuch",
                     "--store", str(tmp_path / "s.sqlite"), *FAST_FLAGS)
    assert result.returncode == 2 and "nosuch" in result.stderr


def test_store_that_is_not_sqlite_is_left_alone(sim, tmp_path):
    path = tmp_path / "precious.db"
    path.write_bytes(b"my thesis\n" * 100)
    result = run_cli("scan", "--hub-url", sim.url, "--router-url", sim.router_url, "--store", str(path), *FAST_FLAGS)
    assert result.returncode == 2 and "not an SQLite" in result.stderr
    assert path.read_bytes() == b"my thesis\n" * 100


@pytest.mark.parametrize("command", [[], ["scan"], ["export"], ["diff"], ["prune"], ["simulate"], ["demo"],
                                     ["report"], ["report", "model"], ["report", "fleet"]])
def test_help_everywhere(command):
    result = run_cli(*command, "--help")
    assert result.returncode == 0 and "usage: python -m analysis" in result.stdout.lower()


@pytest.mark.slow
def test_secret_never_leaves_memory(make_sim, tmp_path):
    """A full scan, every export and both reports with a recognisable token: it is in no file or output."""
    scenario = default_scenario()
    scenario.token = SECRET_TOKEN
    server = make_sim(scenario)
    store = tmp_path / "rca.sqlite"
    env = {"HF_TOKEN": SECRET_TOKEN}
    outputs = [run_cli("scan", "--hub-url", server.url, "--router-url", server.router_url, "--store", str(store),
                       "--provider", "hf-inference", *FAST_FLAGS, env=env)]
    assert outputs[0].returncode == 0, outputs[0].stderr
    assert f"Bearer {SECRET_TOKEN}" in server.app.auth_headers_seen  # it was really sent
    for what in ("findings", "blocklist"):
        for fmt in ("csv", "json", "python"):
            outputs.append(run_cli("export", what, "--store", str(store), "--format", fmt,
                                   "--out", str(tmp_path / f"{what}.{fmt}"), env=env))
    outputs.append(run_cli("report", "model", "--model", "katanemo/Arch-Router-1.5B", "--store", str(store),
                           "--out", str(tmp_path / "reports"), env=env))
    outputs.append(run_cli("report", "fleet", "--store", str(store), "--out", str(tmp_path / "reports"), env=env))
    assert outputs[-1].returncode == 0 and outputs[-2].returncode == 0, outputs[-1].stderr + outputs[-2].stderr
    outputs.append(run_cli("diff", "--store", str(store), "--from", "1", "--to", "1", env=env))
    for out in outputs:
        assert SECRET_TOKEN not in out.stdout and SECRET_TOKEN not in out.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 12  # store (+ WAL), 6 exports, 5 report files
    for path in files:
        assert SECRET_TOKEN.encode() not in path.read_bytes(), path


def test_demo_writes_sample_store_and_blocklist(demo_output, sample_store):
    """The session's sample store is the demo's output (conftest): this test reads what the demo wrote."""
    result = demo_output
    tmp_path = sample_store.parent
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sample.sqlite").exists() and (tmp_path / "sample-blocklist.csv").exists()
    assert "endpoint_error" in result.stdout  # the retired endpoint run
    with open_store(tmp_path / "sample.sqlite", create=False) as store:
        runs = store.runs()
        # the retired endpoint, then the router, then an account with every provider switched off: none blocks
        assert list(runs["status"]) == ["failed", "ok", "ok", "ok", "failed"]
        assert list(runs["failure_reason"])[0] == list(runs["failure_reason"])[4] == "endpoint_error"
        assert "switched off in your Hugging Face settings" in runs["failure_message"].iloc[4]
        assert not store.findings(5)["blocked"].any()
        bare = store.findings(2).set_index("model_id")
        latest = store.findings(store.latest_run_id())
    # the seed incident: refused as a bare id, working as id:hf-inference, never blocked
    assert bare.loc["katanemo/Arch-Router-1.5B", "reason"] == "route_mismatch"
    assert bare.loc["katanemo/Arch-Router-1.5B", "working_route"] == "katanemo/Arch-Router-1.5B:hf-inference"
    assert not bare["blocked"].loc["katanemo/Arch-Router-1.5B"]
    arch = latest[latest["model_id"] == "katanemo/Arch-Router-1.5B"].iloc[0]
    assert arch["reason"] == "ok"
    # a reasoning model refusing the probe's budget works with a large one: not blocked, and says how
    qwen3 = latest[latest["model_id"] == "Qwen/Qwen3-0.6B"].iloc[0]
    assert qwen3["reason"] == "probe_error" and qwen3["working_settings"] == "max_tokens=4096; stream=true"
    blocked = csv_rows((tmp_path / "sample-blocklist.csv").read_text())
    assert len(blocked) == int(latest["blocked"].sum()) > 0
    assert not any(name.startswith(".sample-") for name in map(lambda p: p.name, Path(tmp_path).iterdir()))
