"""Catalog fetching against the real simulator: cursor pagination, caps, 429, shapes, faults."""

from __future__ import annotations

import httpx
import pandas as pd
import pytest

from analysis.devtools.simulator import default_scenario, synthetic_scenario
from analysis.errors import CatalogError, RunLevelError, UsageError
from analysis.pipeline.catalog import (
    HubNormaliser,
    attach_router_list,
    fetch_hub_models,
    fetch_router_models,
    normalise_hub_models,
)
from analysis.pipeline.targets import build_targets, parse_provider_spec

from .helpers import sim_stats


def _scenario(n=57, page_cap=10, **hub):
    scenario = synthetic_scenario(n, 0, page_cap=page_cap)
    scenario.hub.update(hub)
    return scenario


def test_follows_link_cursor_with_capped_pages_and_one_429(make_sim):
    server = make_sim(_scenario(57, page_cap=10, rate_limit_pages=[2], rate_limit_reset=0))
    waits = []
    entries = fetch_hub_models(server.url, "hf-inference", limit=1000, sleep=waits.append)
    ids = [e["id"] for e in entries]
    assert len(ids) == 57 and len(set(ids)) == 57
    stats = sim_stats(server)
    assert stats["hub_pages_served"] == 6  # 57 models at a cap of 10, despite limit=1000
    assert stats["hub_429s"] == 1 and waits == [0.0]


def test_pages_normalised_as_they_come_make_the_same_catalog(make_sim):
    server = make_sim(_scenario(57, page_cap=10))
    pages: list[list[dict]] = []
    entries = fetch_hub_models(server.url, "hf-inference", on_entries=pages.append)
    assert [len(p) for p in pages] == [10, 10, 10, 10, 10, 7]
    assert [e for page in pages for e in page] == entries
    normaliser = HubNormaliser("hf_secret")
    for page in pages:
        normaliser.add(page)
    # A repeated id (in a later page or within one) keeps its first entry, as in one call.
    normaliser.add([{**entries[3], "pipeline_tag": "text-to-image"}, {"id": "bad\x1bid"}])
    whole = normalise_hub_models([*entries, {**entries[3], "pipeline_tag": "text-to-image"}, {"id": "bad\x1bid"}],
                                 "hf_secret")
    pd.testing.assert_frame_equal(normaliser.frame(), whole)
    assert normaliser.frame().attrs["skipped_ids"] == whole.attrs["skipped_ids"] == 1


def test_ratelimit_header_sets_the_wait(make_sim):
    server = make_sim(_scenario(5, page_cap=2, rate_limit_pages=[1], rate_limit_reset=7))
    waits = []
    fetch_hub_models(server.url, "hf-inference", sleep=waits.append)
    assert waits == [7.0]


def test_offset_is_never_used(make_sim):
    server = make_sim(_scenario(30, page_cap=10))
    seen = []
    with httpx.Client() as client:
        url = f"{server.url}/api/models?inference_provider=hf-inference&offset=10"
        first = client.get(url).json()
        seen.append(first[0]["id"])
    # the simulator, like the Hub, ignores offset: the "next" page must come from the cursor
    assert seen == ["bench-org/model-000000"]
    entries = fetch_hub_models(server.url, "hf-inference")
    assert len({e["id"] for e in entries}) == 30


def test_only_the_providers_slice_is_fetched(sim):
    catalog = normalise_hub_models(fetch_hub_models(sim.url, "hf-inference"))
    scenario = default_scenario()
    expected = {m["id"] for m in scenario.models if any(p["provider"] == "hf-inference" for p in m["providers"])}
    assert set(catalog["model_id"]) == expected
    assert "CohereLabs/aya-expanse-32b" not in set(catalog["model_id"])  # mapped to cohere only
    arch = catalog.set_index("model_id").loc["katanemo/Arch-Router-1.5B"]
    assert arch["pipeline_tag"] == "text-generation"
    assert arch["mapping"]["hf-inference"] == {"status": "live", "task": "conversational",
                                               "providerId": "katanemo/Arch-Router-1.5B"}
    assert arch["mapping_shape"] == "list"
    granite = catalog.set_index("model_id").loc["ibm-granite/granite-3.3-2b-instruct"]
    assert pd.isna(granite["pipeline_tag"])
    for column in ("tags", "library_name", "gated", "downloads", "likes", "created_at", "last_modified"):
        assert column in catalog.columns
    assert catalog.set_index("model_id").loc["meta-llama/Llama-Guard-3-1B", "gated"] == "manual"


@pytest.mark.parametrize("shape, expected", [("list", "list"), ("dict", "dict"), ("missing", "missing")])
def test_mapping_shapes(make_sim, shape, expected):
    server = make_sim(_scenario(3, mapping_shape=shape))
    catalog = normalise_hub_models(fetch_hub_models(server.url, "hf-inference"))
    assert set(catalog["mapping_shape"]) == {expected}
    if expected != "missing":
        assert all(m["hf-inference"]["status"] == "live" for m in catalog["mapping"])
    else:
        assert all(m == {} for m in catalog["mapping"])


def test_dict_shape_from_the_single_model_endpoint(sim):
    data = httpx.get(f"{sim.url}/api/models/katanemo/Arch-Router-1.5B").json()
    catalog = normalise_hub_models([data])
    assert catalog.iloc[0]["mapping_shape"] == "dict"
    assert catalog.iloc[0]["mapping"]["hf-inference"]["status"] == "live"
    missing = httpx.get(f"{sim.url}/api/models/nobody/nothing")
    assert missing.status_code == 404 and missing.headers["x-error-code"] == "RepoNotFound"


def test_link_loop_is_detected(make_sim):
    server = make_sim(_scenario(40, page_cap=10, page_faults={"2": "loop"}))
    with pytest.raises(CatalogError, match="loops"):
        fetch_hub_models(server.url, "hf-inference", sleep=lambda s: None)
    assert sim_stats(server)["hub_pages_served"] <= 5


@pytest.mark.parametrize("fault", ["500_once", "truncated_once", "html200_once"])
def test_transient_page_faults_are_retried(make_sim, fault):
    server = make_sim(_scenario(25, page_cap=10, page_faults={"1": fault}))
    entries = fetch_hub_models(server.url, "hf-inference", sleep=lambda s: None)
    assert len(entries) == 25


@pytest.mark.parametrize("fault, words", [("truncated", "malformed JSON"), ("html200", "HTML page"),
                                          ("500", "HTTP 500")])
def test_persistent_page_faults_fail_clearly(make_sim, fault, words):
    server = make_sim(_scenario(25, page_cap=10, page_faults={"1": fault}))
    with pytest.raises(CatalogError, match=words) as info:
        fetch_hub_models(server.url, "hf-inference", retries=2, sleep=lambda s: None)
    assert "page 2" in str(info.value)


def test_wrong_token_is_run_level(make_sim):
    scenario = _scenario(3)
    scenario.token = "right-token"
    server = make_sim(scenario)
    with pytest.raises(RunLevelError) as info:
        fetch_hub_models(server.url, "hf-inference", token="wrong-token")
    assert info.value.reason == "auth_error" and "HF_TOKEN" in str(info.value)
    assert "wrong-token" not in str(info.value)


def test_unknown_provider_is_refused_by_the_hub(sim):
    with pytest.raises(CatalogError, match="Invalid inference provider"):
        fetch_hub_models(sim.url, "no-such-provider")


def test_unreachable_hub_is_a_clear_error():
    with pytest.raises(CatalogError, match="could not connect"):
        fetch_hub_models("http://127.0.0.1:9", "hf-inference", retries=0, timeout=2)


def test_router_list_marks_listed_models(sim):
    catalog = normalise_hub_models(fetch_hub_models(sim.url, "hf-inference"))
    with_list = attach_router_list(catalog, fetch_router_models(sim.router_url)).set_index("model_id")
    assert with_list.loc["katanemo/Arch-Router-1.5B", "in_router_list"] is True
    assert with_list.loc["BAAI/bge-small-en-v1.5", "in_router_list"] is False  # not a chat model
    assert with_list.loc["google/gemma-2-27b-it", "in_router_list"] is False  # mapping in error
    unknown = attach_router_list(catalog, None)
    assert unknown["in_router_list"].isna().all()


def test_router_list_on_a_retired_endpoint_is_run_level(sim):
    with pytest.raises(RunLevelError) as info:
        fetch_router_models(f"{sim.url}/retired/v1")
    assert info.value.reason == "endpoint_error"


def test_targets_use_provider_suffix():
    catalog = normalise_hub_models([
        {"id": "a/one", "inferenceProviderMapping": [
            {"provider": "together", "status": "live", "task": "conversational"},
            {"provider": "novita", "status": "error", "task": "conversational"}]},
        {"id": "a/two", "inferenceProviderMapping": [
            {"provider": "novita", "status": "live", "task": "conversational"}]},
        {"id": "a/one"},  # duplicate ids are dropped
        {"id": "a/three"},  # no mapping facts at all
    ])
    assert len(catalog) == 3
    single = build_targets(catalog, ["together"])
    # a/two is mapped, but not to together: not a target; a/three has no facts: probed as the gateway would
    assert [(t.model_id, t.model_string) for t in single] == [("a/one", "a/one:together"),
                                                              ("a/three", "a/three:together")]
    every = build_targets(catalog, None)
    assert sorted(t.model_string for t in every) == ["a/one:novita", "a/one:together", "a/three", "a/two:novita"]
    bare = build_targets(catalog, ["together"], route_suffix=False)
    assert [t.model_string for t in bare] == ["a/one", "a/three"]


def test_provider_spec():
    assert parse_provider_spec("together") == ["together"]
    assert parse_provider_spec("a, b") == ["a", "b"]
    assert parse_provider_spec("all") is None
    with pytest.raises(UsageError):
        parse_provider_spec("bad name;rm")


def test_fresh_cursors_for_the_same_page_are_a_loop(make_sim):
    server = make_sim(_scenario(40, page_cap=10, page_faults={"1": "stuck", "2": "stuck", "3": "stuck",
                                                              "4": "stuck", "5": "stuck"}))
    with pytest.raises(CatalogError, match="added no new model"):
        fetch_hub_models(server.url, "hf-inference", sleep=lambda s: None)
    assert sim_stats(server)["hub_pages_served"] <= 6


def test_a_next_link_to_another_host_is_refused_with_the_token_kept_home(make_sim):
    scenario = _scenario(30, page_cap=10, page_faults={"0": "foreign"})
    server = make_sim(scenario)
    with pytest.raises(CatalogError, match="another host"):
        fetch_hub_models(server.url, "hf-inference", token="rca-test-secret-not-a-real-token")
    assert sim_stats(server)["hub_pages_served"] == 1
