"""Other catalogs (router, any OpenAI-compatible gateway, a file) and metadata-only scans."""

from __future__ import annotations

import json

import pytest

from analysis.errors import UsageError
from analysis.pipeline.catalog import read_catalog_file
from analysis.pipeline.scan import run_scan
from analysis.store import open_store

from .helpers import FAST_FLAGS, csv_rows, fast_config, reset_stats, run_cli, sim_stats
from .test_scan_cli import EXPECTED_HF_INFERENCE


def test_openai_compatible_gateway_probes_bare_ids(sim, store_path):
    with open_store(store_path) as store:
        outcome = run_scan(fast_config(sim, source="openai", router_url=f"{sim.url}/openai/v1", provider="all",
                                       route_checks=0), store)
        findings = store.findings(outcome.run_id)
        run = store.get_run(outcome.run_id)
    assert outcome.exit_code == 0 and run.source == "openai" and run.provider == "-"
    assert (findings["model_string"] == findings["model_id"]).all()
    assert set(findings["provider"]) == {""}
    arch = findings.set_index("model_id").loc["katanemo/Arch-Router-1.5B"]
    # the gateway lists it; without a provider suffix the router refuses it
    assert arch["reason"] == "not_supported" and arch["http_status"] == 400


def test_router_source_uses_the_router_list_as_catalog(sim, store_path):
    with open_store(store_path) as store:
        outcome = run_scan(fast_config(sim, source="router", provider="hf-inference"), store)
        findings = store.findings(outcome.run_id).set_index("model_id")
    # the router lists only served chat models, so non-chat and error mappings are absent
    assert "BAAI/bge-small-en-v1.5" not in findings.index
    assert findings.loc["katanemo/Arch-Router-1.5B", "model_string"] == "katanemo/Arch-Router-1.5B:hf-inference"
    assert findings.loc["katanemo/Arch-Router-1.5B", "reason"] == "ok"


@pytest.mark.parametrize("name, content", [
    ("ids.json", json.dumps(["katanemo/Arch-Router-1.5B", "BAAI/bge-small-en-v1.5", "no-such/model"])),
    ("objects.json", json.dumps([{"id": "katanemo/Arch-Router-1.5B"}, {"model_id": "BAAI/bge-small-en-v1.5",
                                                                        "pipeline_tag": "feature-extraction"},
                                 {"id": "no-such/model"}])),
    ("ids.csv", "model_id,owner\nkatanemo/Arch-Router-1.5B,x\nBAAI/bge-small-en-v1.5,y\nno-such/model,z\n"),
    ("plain.csv", "katanemo/Arch-Router-1.5B\nBAAI/bge-small-en-v1.5\nno-such/model\n"),
])
def test_file_source(sim, tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with open_store(tmp_path / "s.sqlite") as store:
        outcome = run_scan(fast_config(sim, source="file", catalog_file=str(path), provider="hf-inference",
                                       route="suffix"), store)
        findings = store.findings(outcome.run_id).set_index("model_id")
    assert set(findings.index) == {"katanemo/Arch-Router-1.5B", "BAAI/bge-small-en-v1.5", "no-such/model"}
    assert findings.loc["katanemo/Arch-Router-1.5B", "reason"] == "ok"
    assert findings.loc["no-such/model", "reason"] == "not_found"
    # without a tag (plain ids) the refusal's own text says it: no 'conversational' task for this model
    assert findings.loc["BAAI/bge-small-en-v1.5", "reason"] == "non_chat_task"


def test_file_source_sends_bare_ids_by_default(sim, tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("katanemo/Arch-Router-1.5B\nHuggingFaceTB/SmolLM3-3B\n")
    with open_store(tmp_path / "s.sqlite") as store:
        outcome = run_scan(fast_config(sim, source="file", catalog_file=str(path)), store)
        findings = store.findings(outcome.run_id).set_index("model_id")
    assert list(findings["model_string"]) == list(findings.index)  # a gateway's own ids, unchanged
    assert findings.loc["HuggingFaceTB/SmolLM3-3B", "reason"] == "ok"
    # the seed incident through a bare id: refused, and no catalog facts to explain or reroute it
    assert findings.loc["katanemo/Arch-Router-1.5B", "reason"] == "not_supported"


def test_file_source_against_a_wrong_endpoint_blocks_nothing(sim, tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("katanemo/Arch-Router-1.5B\nHuggingFaceTB/SmolLM3-3B\nQwen/Qwen3-8B\n")
    result = run_cli("scan", "--source", "file", "--catalog-file", str(path), "--router-url",
                     f"{sim.url}/wrongpath/v1", "--store", str(tmp_path / "s.sqlite"), *FAST_FLAGS)
    assert result.returncode == 3 and "endpoint_error" in result.stderr
    export = run_cli("export", "blocklist", "--store", str(tmp_path / "s.sqlite"))
    assert export.returncode == 3 and export.stdout == "" and "no successful probing run" in export.stderr


@pytest.mark.parametrize("content, words", [("{not json", "not valid JSON"), ("[]", "no model ids"),
                                            ('{"a": 1}', "expected a JSON list")])
def test_bad_catalog_file(tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=words):
        read_catalog_file(str(path))


def test_file_source_needs_a_file(tmp_path):
    result = run_cli("scan", "--source", "file", "--store", str(tmp_path / "s.sqlite"))
    assert result.returncode == 2 and "--catalog-file" in result.stderr


def test_no_probe_makes_zero_chat_calls_and_blocks_nothing(sim, tmp_path):
    reset_stats(sim)
    store = tmp_path / "rca.sqlite"
    result = run_cli("scan", "--hub-url", sim.url, "--router-url", sim.router_url, "--store", str(store),
                     "--no-probe", *FAST_FLAGS)
    assert result.returncode == 0, result.stderr
    assert "PREDICTED" in result.stdout
    assert sim_stats(sim)["chat_requests"] == 0
    with open_store(store) as s:
        run = s.get_run(1)
        findings = s.findings(1).set_index("model_id")
    assert run.mode == "predict"
    assert findings["predicted"].all() and not findings["blocked"].any()
    assert findings.loc["BAAI/bge-small-en-v1.5", "reason"] == "non_chat_task"
    assert findings.loc["google/gemma-2-27b-it", "reason"] == "provider_mapping_error"
    assert findings.loc["katanemo/Arch-Router-1.5B", "reason"] == "ok"
    assert findings.loc["BAAI/bge-small-en-v1.5", "detail"].startswith("predicted from metadata")
    assert set(findings.index) == set(EXPECTED_HF_INFERENCE)
    exported = csv_rows(run_cli("export", "findings", "--store", str(store)).stdout)
    assert {r["predicted"] for r in exported} == {"true"}
    blocklist = run_cli("export", "blocklist", "--store", str(store))
    assert blocklist.returncode == 3 and blocklist.stdout == ""  # a prediction never feeds a blocklist
