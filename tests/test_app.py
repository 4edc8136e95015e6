"""The Streamlit dashboard through AppTest, against seeded temporary stores; and its pure helpers.

Stores come from the session's ``sample_store`` (scans of the default simulator
scenario: run 1 failed against the retired endpoint, the later ones ok).  Tests
that write copy it first.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pandas as pd
import pytest
import streamlit.testing.v1.app_test as app_test_module
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from analysis.config import ScanConfig
from analysis.devtools.simulator import synthetic_scenario
from analysis.outputs import background, dashboard, explain, views
from analysis.outputs.export import Provenance, blocklist_bytes
from analysis.schema import Run
from analysis.store import open_store
from analysis.taxonomy import BLOCKING, REASON_NAMES

from .helpers import PROJECT_ROOT, SECRET_TOKEN, run_cli, sim_stats

APP = PROJECT_ROOT / "app.py"
ARCH = "katanemo/Arch-Router-1.5B"
PAGES = ["app_pages/overview.py", "app_pages/models.py", "app_pages/detail.py", "app_pages/blocklist.py",
         "app_pages/scan.py", "app_pages/reports.py"]
DATA_PAGES = PAGES[:4]
# Elements whose text Streamlit renders as markdown: upstream text must never reach them.
MARKDOWN_ELEMENTS = ("markdown", "caption", "title", "header", "subheader", "error", "warning", "info", "success")


@pytest.fixture
def open_app(monkeypatch, tmp_path):
    """Start the app on a store (``RCA_STORE``), without any token in the environment; whatever it writes by
    default (reports) goes to the test's temp dir (``RCA_HOME``)."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("RCA_HOME", str(tmp_path / "home"))

    def start(store: Path | str, page: str | None = None, **query: str) -> AppTest:
        monkeypatch.setenv("RCA_STORE", str(store))
        at = AppTest.from_file(str(APP), default_timeout=30)
        at.query_params.update(query)
        at.run()
        if page:
            at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return start


@pytest.fixture
def sample_copy(sample_store, tmp_path) -> Path:
    target = tmp_path / "copy" / "rca.sqlite"
    target.parent.mkdir()
    shutil.copy(sample_store, target)
    return target


def latest(store: Path) -> views.RunView:
    """The run the dashboard opens by default."""
    with open_store(store, create=False) as s:
        return views.load_run(s)


def failed_run_id(store: Path) -> int:
    """The sample's run that failed at run level (the retired endpoint)."""
    with open_store(store, create=False) as s:
        runs = s.runs()
    return int(runs[runs["status"] == "failed"]["id"].iloc[0])


def texts(at: AppTest, *kinds: str) -> str:
    """All the text of the given element kinds, joined."""
    return "\n".join(str(el.value) for kind in kinds for el in getattr(at, kind))


def frame(at: AppTest, *columns: str, exact: bool = False) -> pd.DataFrame:
    """The one table whose first (``exact``: only) columns are ``columns``; AppTest finds only selectable
    tables by key."""
    found = [df.value for df in at.dataframe if list(df.value.columns[:len(columns)]) == list(columns)
             and (not exact or len(df.value.columns) == len(columns))]
    assert len(found) == 1, [list(df.value.columns) for df in at.dataframe]
    return found[0]


def shown_table(at: AppTest) -> pd.DataFrame:
    tables = [df for df in at.dataframe if df.key and df.key.startswith("models_table_")]
    assert len(tables) == 1
    return tables[0].value


# --------------------------------------------------------------------------- every page


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_the_sample(open_app, sample_store, page):
    at = open_app(sample_store, page)
    if page == "app_pages/detail.py":  # it opens on a blocked model: the one red box is that verdict
        assert [e.value.split(":")[0] for e in at.error] == ["Blocked"]
    else:
        assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == {"overview": "Overview", "models": "Models", "detail": "Model detail",
                                 "blocklist": "Blocklist", "scan": "Scan", "reports": "Reports"}[Path(page).stem]
    assert at.sidebar.selectbox(key="run_id").value == latest(sample_store).run_id  # the latest successful run


def test_overview_tiles_and_charts(open_app, sample_store):
    at = open_app(sample_store)
    figures = views.kpis(latest(sample_store))
    tiles = {m.label: int(m.value) for m in at.metric}
    assert list(tiles) == ["Working", "Blocked", "Route fix", "Probe fix", "Transient", "Not judged"]
    assert sum(tiles.values()) == figures["targets"]  # each target in exactly one tile
    assert tiles["Working"] == figures["working"] and tiles["Blocked"] == figures["blocked"]
    assert tiles["Route fix"] == figures["route_mismatch"] > 0 and tiles["Probe fix"] == figures["probe_error"] > 0
    assert f"{figures['models']} models" in texts(at, "caption")
    charts = at.get("plotly_chart")
    assert len(charts) == 4  # scope hub:all has two successful runs: the trend is drawn
    # A scope with one successful run (hf-inference, run 2) has no trend to draw.
    at.sidebar.selectbox(key="run_id").set_value(2).run()
    assert len(at.get("plotly_chart")) == 3
    assert "appears once this scope has two successful runs" in texts(at, "caption")


def test_charts_read_in_words_in_one_palette(sample_store):
    import json

    from analysis.outputs import charts

    findings = latest(sample_store).findings
    figures = [charts.reason_bar(views.reason_counts(findings)),
               charts.tag_reason_bar(views.tag_reason_counts(findings)),
               charts.latency_histogram(views.working_latencies(findings)),
               charts.trend_lines(pd.DataFrame({"run_id": [3, 4], "started_at": ["a", "b"], "total": [9, 9],
                                                "working": [5, 6], "blocked": [3, 2], "transient": [1, 1]}))]
    reasons = figures[0]
    assert reasons.layout.xaxis.type == "log"  # one failure next to 150 working is still a visible bar
    counts = views.reason_counts(findings).set_index("reason")["count"]
    assert counts.min() == 1 and counts["ok"] > 100
    assert all(trace.marker.color == charts.REASON_COLORS[trace.name] for trace in reasons.data)
    assert "ok" not in {trace.name for trace in figures[1].data}  # failures apart from the working
    for fig in figures:
        spec = json.dumps(fig.to_plotly_json()["layout"])
        titles = [fig.layout.title.text, fig.layout.xaxis.title.text, fig.layout.yaxis.title.text]
        assert all(t is None or "_" not in t for t in titles), titles  # no raw column names
        assert "count_of" not in spec and '"count"' not in spec
        hover = {trace.hovertemplate for trace in fig.data}
        assert all("=" not in h for h in hover), hover  # not Plotly's "column=value" default
    assert list(figures[3].layout.xaxis.ticktext) == ["#3", "#4"]  # whole runs, no half-ticks


def test_overview_ranks_top_causes_by_signature(open_app, sample_store):
    at = open_app(sample_store)
    shown = frame(at, "error_signature", "models", "targets")
    expected = views.top_causes(latest(sample_store).findings)
    assert len(shown) == len(expected) > 0
    assert list(shown["error_signature"]) == list(expected["error_signature"])
    assert list(shown["models"]) == sorted(shown["models"], reverse=True)


def test_a_probe_error_shows_the_settings_that_worked(open_app, sample_store):
    at = open_app(sample_store, "app_pages/detail.py", model="Qwen/Qwen3-0.6B", provider="hf-inference")
    assert "Not blocked: it works with adjusted request settings" in texts(at, "warning")
    assert "max_tokens=4096; stream=true" in texts(at, "code")


def test_the_detail_lists_the_other_targets_with_the_same_cause(open_app, sample_store):
    findings = latest(sample_store).findings
    shared = findings[findings["reason"] == "provider_mapping_error"].iloc[0]
    at = open_app(sample_store, "app_pages/detail.py", model=shared["model_id"], provider=shared["provider"])
    assert shared["error_signature"] in texts(at, "code")
    same = [df.value for df in at.dataframe if df.key == "detail_same_cause"]
    expected = views.same_signature(findings, shared["model_id"], shared["provider"])
    assert len(same) == 1 and len(same[0]) == len(expected) > 0
    assert list(same[0]["model_id"]) == list(expected["model_id"])


def test_overview_link_opens_the_filtered_model_list(open_app, sample_store):
    at = open_app(sample_store)
    at.button(key="overview_show_blocked").click().run()
    assert at.title[0].value == "Models"
    table = shown_table(at)
    assert len(table) == views.kpis(latest(sample_store))["blocked"] > 0
    assert table["blocked"].all()
    assert at.selectbox(key="models_blocked").value == "blocked"


def test_chart_click_filters_reach_the_models_page(open_app, sample_store):
    # Streamlit cannot fake a Plotly click in AppTest; the callback's two halves are tested instead:
    # chart_filters (below) and the filters it hands over through session state.
    findings = latest(sample_store).findings
    clicked = findings[findings["reason"] == "non_chat_task"].iloc[0]
    at = open_app(sample_store)
    at.session_state["model_filters"] = dashboard.chart_filters("tag_reason", [
        {"y": clicked["pipeline_tag"], "legendgroup": "non_chat_task"}])
    at.session_state["apply_model_filters"] = True
    at.switch_page("app_pages/models.py").run()
    table = shown_table(at)
    expected = views.filter_findings(findings, reasons=["non_chat_task"], pipeline_tags=[clicked["pipeline_tag"]])
    assert sorted(table["model_id"]) == sorted(expected["model_id"])
    assert set(table["reason"]) == {"non_chat_task"}


# --------------------------------------------------------------------------- models page


def test_saved_filters_show_what_needs_action_and_what_is_new(open_app, sample_store):
    at = open_app(sample_store, "app_pages/models.py")
    view = latest(sample_store)
    findings = view.findings
    at.segmented_control(key="models_view").set_value("needs action").run()
    table = shown_table(at)
    needed = findings["blocked"].astype(bool) | findings["action"].isin(["block", "fix route", "fix probe"])
    assert len(table) == int(needed.sum()) > 0
    assert set(table["action"]) <= {"block", "fix route", "fix probe"} and "wait" not in set(table["action"])

    at.segmented_control(key="models_view").set_value("new since previous run").run()
    with open_store(sample_store, readonly=True) as s:
        previous = s.findings(s.previous_ok_run(view.run_id))
    before = dict(zip(zip(previous["model_id"], previous["provider"]), previous["reason"]))
    new = {(m, p) for m, p, r in zip(findings["model_id"], findings["provider"], findings["reason"])
           if before.get((m, p)) != r}
    assert 0 < len(new) < len(findings)
    assert set(zip(shown_table(at)["model_id"], shown_table(at)["provider"])) == new
    assert not at.exception


def test_reasons_and_actions_are_coloured_badges_from_the_one_palette():
    from analysis.outputs.charts import REASON_COLORS

    assert REASON_COLORS["gated"] in dashboard.reason_badge("gated")
    assert dashboard.reason_badge("gated") != dashboard.reason_badge("ok")
    assert dashboard.reason_badge("<script>") == ""  # an unknown word gets no style, and no markup
    assert dashboard.action_badge("fix route") and dashboard.action_badge("block") != dashboard.action_badge("wait")


def test_filters_change_the_rows_shown(open_app, sample_store):
    at = open_app(sample_store, "app_pages/models.py")
    findings = latest(sample_store).findings
    assert len(shown_table(at)) == len(findings)

    at.multiselect(key="models_reasons").set_value(["provider_mapping_error"]).run()
    table = shown_table(at)
    assert len(table) == (findings["reason"] == "provider_mapping_error").sum() > 0
    assert set(table["reason"]) == {"provider_mapping_error"}

    at.multiselect(key="models_statuses").set_value(["error"]).run()
    expected = views.filter_findings(findings, reasons=["provider_mapping_error"], mapping_statuses=["error"])
    assert sorted(shown_table(at)["model_id"]) == sorted(expected["model_id"])

    at.button(key="models_clear").click().run()
    assert len(shown_table(at)) == len(findings)

    at.text_input(key="models_search").set_value("arch-router").run()
    table = shown_table(at)
    assert list(table["model_id"]) == [ARCH]
    assert table["hub_page"].iloc[0] == f"https://huggingface.co/{ARCH}"

    at.text_input(key="models_search").set_value("").run()
    at.selectbox(key="models_blocked").set_value("not blocked").run()
    assert len(shown_table(at)) == (~findings["blocked"]).sum()
    tag = findings["pipeline_tag"].value_counts().index[0]
    at.multiselect(key="models_tags").set_value([tag]).run()
    expected = views.filter_findings(findings, blocked=False, pipeline_tags=[tag])
    assert 0 < len(expected) < len(findings)
    assert sorted(shown_table(at)["model_id"]) == sorted(expected["model_id"])


def test_selecting_a_row_opens_its_detail(open_app, sample_store):
    at = open_app(sample_store, "app_pages/models.py")
    at.text_input(key="models_search").set_value("Arch-Router").run()
    key = next(df.key for df in at.dataframe if df.key.startswith("models_table_"))
    at.session_state[key] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    assert at.title[0].value == "Model detail"
    assert at.selectbox(key="detail_pick").value == (ARCH, "hf-inference")
    assert at.query_params["model"] == ARCH  # a shareable link to this verdict
    at.switch_page("app_pages/models.py").run()  # back to the list: it must not bounce to the detail again
    assert at.title[0].value == "Models"
    assert list(shown_table(at)["model_id"]) == [ARCH]  # the filters survived the trip


# --------------------------------------------------------------------------- model detail


def test_arch_router_detail_shows_the_real_cause(open_app, sample_store):
    failed = failed_run_id(sample_store)
    at = open_app(sample_store, "app_pages/detail.py", model=ARCH, provider="hf-inference")
    assert at.selectbox(key="detail_pick").value == (ARCH, "hf-inference")
    # The verdict: it works, as katanemo/Arch-Router-1.5B:hf-inference.
    assert "Works" in texts(at, "success")
    plain = texts(at, "text")
    assert f"answered a chat completion for '{ARCH}:hf-inference'" in plain
    assert f"Earlier run-level failures (endpoint_error in run #{failed})" in plain
    # The retired-endpoint run, called out as not about this model.
    assert f"Run #{failed} failed at run level (endpoint_error)" in texts(at, "info")
    assert "retired" in plain and "410 Gone" in plain
    # The exact request and a copy-paste curl with the token placeholder.
    code = texts(at, "code")
    assert f"{ARCH}:hf-inference" in code
    assert "/v1/chat/completions" in code
    assert 'Authorization: Bearer $HF_TOKEN' in code
    # History across runs, newest first, down to the failed run.
    history = frame(at, "run_id", "run_started_at", "run_status")
    with open_store(sample_store, create=False) as store:
        expected = views.model_history(store, ARCH, "hf-inference")
    assert list(history["run_id"]) == list(expected["run_id"])
    assert list(history["reason"]) == list(expected["reason"])
    # newest first: the account-level failure after the judged run, the judged run, ..., the retired endpoint
    assert history.iloc[0][["run_status", "reason"]].tolist() == ["failed", "endpoint_error"]
    assert history.iloc[1]["reason"] == "ok"
    assert history.iloc[-1][["run_id", "run_status", "reason"]].tolist() == [failed, "failed", "endpoint_error"]
    attempts = frame(at, "kind", "model_string", "url")
    assert list(attempts["http_status"]) == [200]
    assert list(attempts["model_string"]) == [f"{ARCH}:hf-inference"]
    mappings = frame(at, "provider", "status", "task")
    assert list(mappings["status"]) == ["live"]
    facts = dict(frame(at, "fact", "value").values)
    assert facts["pipeline tag"] == "text-generation"
    assert facts["router lists it"] == "yes"
    streak = frame(at, "consecutive_failures", "first_failed_at", "last_ok_at", "flaps").iloc[0]
    assert streak["consecutive_failures"] == 0 and streak["last_ok_at"] == latest(sample_store).findings.set_index(
        "model_id").loc[ARCH, "last_ok_at"]


def test_blocked_model_detail_shows_reason_and_evidence(open_app, sample_store):
    findings = latest(sample_store).findings
    row = findings[findings["reason"] == "non_chat_task"].iloc[0]
    at = open_app(sample_store, "app_pages/detail.py", model=row["model_id"], provider=row["provider"])
    assert "Blocked: non_chat_task" in texts(at, "error")
    assert "says it is not a chat model" in texts(at, "text")
    assert str(row["message"]) in texts(at, "code")
    attempts = frame(at, "kind", "model_string", "url")
    assert 400 in set(attempts["http_status"])


def test_upstream_text_never_renders_as_markdown(open_app, sample_copy):
    evil_message = "Use [this](http://evil.example/login) ![x](http://evil.example/x.png) <img src=x>"
    evil_failure = "410 from http://evil.example/retired :red[boom] $x$"
    db = sqlite3.connect(sample_copy)
    with db:
        db.execute("UPDATE findings SET message = ?, detail = ? WHERE model_id = ?", (evil_message, evil_message, ARCH))
        db.execute("UPDATE runs SET failure_message = ? WHERE status = 'failed'", (evil_failure,))
    db.close()
    at = open_app(sample_copy, "app_pages/detail.py", model=ARCH, provider="hf-inference")
    assert "evil.example/login" in texts(at, "code")  # shown, as plain text
    assert "evil.example/retired" in texts(at, "text")
    at.switch_page("app_pages/models.py").run()
    at.text_input(key="models_search").set_value("evil.example").run()
    assert list(shown_table(at)["model_id"]) == [ARCH]
    at.sidebar.selectbox(key="run_id").set_value(failed_run_id(sample_copy)).run()  # its message: a banner
    assert "evil.example/retired" in texts(at, "text")
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception
        rendered = texts(at, *MARKDOWN_ELEMENTS)
        assert "evil.example" not in rendered, page


# --------------------------------------------------------------------------- blocklist


@pytest.fixture
def media(monkeypatch):
    """The bytes behind every download button: AppTest keeps them in a storage it drops after each run."""
    storages: list[MemoryMediaFileStorage] = []

    class Recording(MemoryMediaFileStorage):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            storages.append(self)

    monkeypatch.setattr(app_test_module, "MemoryMediaFileStorage", Recording)

    def offered(at: AppTest, key: str) -> bytes:
        url = at.download_button(key=key).proto.url
        assert url.startswith("/mock/media/")
        file_id = url.rsplit("/", 1)[-1].split(".")[0]
        return storages[-1].get_file(file_id).content

    return offered


def test_blocklist_downloads_are_the_export_bytes(open_app, sample_store, media, tmp_path):
    from datetime import datetime, timezone

    from analysis.outputs.overrides import OVERRIDE_COLUMNS, apply_overrides

    at = open_app(sample_store, "app_pages/blocklist.py")
    # no override in the sample: the export adds the (empty) override column, as the CLI does
    findings = apply_overrides(latest(sample_store).findings, pd.DataFrame(columns=OVERRIDE_COLUMNS),
                               datetime.now(timezone.utc))
    with open_store(sample_store, readonly=True) as store:
        provenance = Provenance.of_run("blocklist", store.get_run(latest(sample_store).run_id))
    assert at.multiselect(key="bl_reasons").value == [r for r in REASON_NAMES if r in BLOCKING]
    for fmt in ("csv", "json", "python"):
        assert media(at, f"bl_download_{fmt}") == blocklist_bytes(findings, fmt, None, provenance)
    # The very file the CLI writes.
    out = tmp_path / "cli.csv"
    result = run_cli("export", "blocklist", "--store", str(sample_store), "--format", "csv", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert media(at, "bl_download_csv") == out.read_bytes()

    chosen = ["gated", "timeout"]
    at.multiselect(key="bl_reasons").set_value(chosen).run()
    for fmt in ("csv", "json", "python"):
        offered = media(at, f"bl_download_{fmt}")
        assert offered == blocklist_bytes(findings, fmt, set(chosen), provenance)
        assert offered != blocklist_bytes(findings, fmt, None, provenance)
    assert "--reasons gated,timeout" in texts(at, "code")


def test_export_routes_equals_the_routes_download_byte_for_byte(open_app, sample_store, media, tmp_path):
    from analysis import cli
    from analysis.outputs.export import routes_frame

    at = open_app(sample_store, "app_pages/blocklist.py")
    for fmt in ("csv", "json", "python"):
        out = tmp_path / f"routes.{fmt}"
        assert cli.main(["export", "routes", "--store", str(sample_store), "--format", fmt, "--out", str(out)]) == 0
        assert media(at, f"bl_routes_{fmt}") == out.read_bytes()
    routes = routes_frame(latest(sample_store).findings)
    assert set(routes["reason"]) == {"route_mismatch", "probe_error"}
    qwen = routes.set_index("model_id").loc["Qwen/Qwen3-0.6B"]
    assert qwen["working_route"] == qwen["broken_route"] == "Qwen/Qwen3-0.6B:hf-inference"
    assert qwen["working_settings"] == "max_tokens=4096; stream=true"
    namespace: dict = {}
    exec((tmp_path / "routes.python").read_text(), namespace)  # noqa: S102 - our own generated code
    assert namespace["REQUEST_SETTINGS"]["Qwen/Qwen3-0.6B:hf-inference"] == "max_tokens=4096; stream=true"
    mismatch = routes[routes["reason"] == "route_mismatch"].iloc[0]
    assert namespace["ROUTE_FIXES"][mismatch["broken_route"]] == mismatch["working_route"]


def test_blocklist_page_applies_and_shows_overrides(open_app, sample_copy, media):
    with open_store(sample_copy, create=False) as store:
        findings = store.findings(store.latest_run_id(mode="probe"))
        allowed = findings[findings["blocked"]].iloc[0]["model_id"]
        store.add_override(model_id=allowed, provider="", action="allow", reason="vendor fixed it", author="ops",
                           expires_at=None)
    at = open_app(sample_copy, "app_pages/blocklist.py")
    shown = frame(at, "id", "model_id", "provider", "action")
    assert list(shown["model_id"]) == [allowed] and list(shown["author"]) == ["ops"]
    offered = media(at, "bl_download_csv").decode()
    assert allowed not in offered and offered.startswith("# tool: catalog-rca\n")
    assert "\nmodel_id,provider,reason" in offered


def test_blocklist_shows_changes_since_previous_run(open_app, sample_store):
    at = open_app(sample_store, "app_pages/blocklist.py")
    run_id = latest(sample_store).run_id
    with open_store(sample_store, create=False) as store:
        changes = views.blocklist_changes(store, run_id, None)
        assert changes["previous_run_id"] == store.previous_ok_run(run_id) is not None
    tiles = {m.label: m.value for m in at.metric}
    assert tiles["Added"] == str(len(changes["added"]))
    assert tiles["Removed"] == str(len(changes["removed"]))
    assert list(frame(at, "model_id", "provider", "reason", exact=True)["model_id"]) == list(
        changes["added"]["model_id"])
    assert list(frame(at, "model_id", "provider", "reason_before")["model_id"]) == list(
        changes["removed"]["model_id"])
    preview = frame(at, "model_id", "provider", "reason", "http_status")
    assert len(preview) == views.kpis(latest(sample_store))["blocked"]


def test_failed_run_offers_no_blocklist(open_app, sample_store):
    at = open_app(sample_store, "app_pages/blocklist.py")
    at.sidebar.selectbox(key="run_id").set_value(failed_run_id(sample_store)).run()
    assert "never feeds a blocklist" in texts(at, "error")
    assert len(at.download_button) == 0
    assert "nothing from it was blocked" in texts(at, "warning")


# --------------------------------------------------------------------------- bad stores


def test_empty_store_gives_an_error_on_every_data_page(open_app, tmp_path):
    empty = tmp_path / "empty.sqlite"
    open_store(empty).close()
    at = open_app(empty)
    for page in DATA_PAGES:
        at.switch_page(page).run()
        assert not at.exception
        assert "no runs yet" in texts(at, "error"), page
    at.switch_page("app_pages/scan.py").run()
    assert not at.exception and not at.error
    assert at.button(key="scan_submit")


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_text("model_id,reason\nnot,a store\n"), "is not an SQLite store"),
    (lambda p: None, "no store at"),
    (lambda p: p.mkdir(), "is a directory"),
])
def test_unusable_store_gives_an_error(open_app, tmp_path, make, words):
    path = tmp_path / "store.sqlite"
    make(path)
    before = path.read_bytes() if path.is_file() else None
    at = open_app(path)
    assert texts(at, "error") == "Cannot open the store."
    assert words in texts(at, "text")
    at.switch_page("app_pages/models.py").run()
    assert not at.exception and texts(at, "error") == "Cannot open the store."
    if before is not None:
        assert path.read_bytes() == before  # left untouched


def test_newer_schema_gives_an_error(open_app, tmp_path):
    path = tmp_path / "future.sqlite"
    open_store(path).close()
    db = sqlite3.connect(path)
    with db:
        db.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', '2099-01-01')")
    db.close()
    at = open_app(path)
    assert texts(at, "error") == "Cannot open the store."
    assert "newer than this tool" in texts(at, "text")


# --------------------------------------------------------------------------- first start


def test_first_start_builds_and_labels_the_sample(open_app, monkeypatch, sample_store, tmp_path):
    import app_pages.shared

    target = tmp_path / "data" / "sample.sqlite"
    built = []

    def fake_build(path, blocklist_path, on_step=None, **kwargs):
        on_step("scan 1 of the sample")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample_store, path)
        built.append(Path(path))

    monkeypatch.setenv("RCA_HOME", str(tmp_path / "data"))  # the data dir: no rca.sqlite there yet
    monkeypatch.setattr(app_pages.shared, "build_sample_store", fake_build)
    monkeypatch.delenv("RCA_STORE", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception
    assert built == [target]
    assert at.sidebar.text_input(key="store_path").value == str(target)
    assert "sample data" in texts(at, "info")
    at.run()  # a second rerun opens it and builds nothing
    assert built == [target] and "sample data" in texts(at, "info")


def test_choose_store(tmp_path, monkeypatch):
    monkeypatch.setenv("RCA_HOME", str(tmp_path / "home"))
    default = tmp_path / "rca.sqlite"
    choice = dashboard.choose_store(None, default)
    assert choice.is_sample and choice.path == tmp_path / "home" / "sample.sqlite"
    default.write_bytes(b"")
    assert dashboard.choose_store(None, default) == dashboard.StoreChoice(default, False, "the default store")
    explicit = dashboard.choose_store(str(tmp_path / "missing.sqlite"), default)
    assert explicit.path == tmp_path / "missing.sqlite" and not explicit.is_sample
    assert dashboard.choose_store(str(tmp_path / "home" / "sample.sqlite"), default).is_sample


# --------------------------------------------------------------------------- scan page


def fill_scan_form(at: AppTest, store: Path, hub: str, router: str, provider: str = "hf-inference",
                   token: str | None = None) -> None:
    at.text_input(key="scan_store").set_value(str(store))
    at.text_input(key="scan_hub").set_value(hub)
    at.text_input(key="scan_router").set_value(router)
    at.text_input(key="scan_provider").set_value(provider)
    at.number_input(key="scan_timeout").set_value(2.0)
    at.number_input(key="scan_retries").set_value(0)
    at.number_input(key="scan_backoff").set_value(0.01)
    if token:
        at.text_input(key="scan_token").set_value(token)


def wait_for_scan(at: AppTest, seconds: float = 90) -> None:
    """Rerun the page (as its fragment timer would) until the watched scan has finished; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while "scan_watch" in at.session_state:
        assert time.monotonic() < deadline, texts(at, "info", "text", "caption")
        time.sleep(0.2)  # the poll interval
        at.run()
        assert not at.exception, [e.value for e in at.exception]


def token_scenario(n: int, latency_ms: float):
    scenario = synthetic_scenario(n, latency_ms=latency_ms)
    scenario.token = SECRET_TOKEN  # the simulator answers only this token: a finished scan proves it arrived
    return scenario


def test_scan_page_adds_a_run_and_shows_it(open_app, make_sim, sample_copy, tmp_path):
    server = make_sim(token_scenario(6, latency_ms=1.0))
    at = open_app(sample_copy, "app_pages/scan.py")
    target = tmp_path / "new" / "rca.sqlite"
    fill_scan_form(at, target, server.url, server.router_url, token=SECRET_TOKEN)
    at.button(key="scan_submit").click().run(timeout=60)
    assert not at.exception, [e.value for e in at.exception]
    # The form keeps what was typed, except the token.
    assert at.text_input(key="scan_hub").value == server.url
    assert at.text_input(key="scan_store").value == str(target)
    assert at.number_input(key="scan_timeout").value == 2.0
    assert at.text_input(key="scan_token").value == ""
    wait_for_scan(at)
    assert "Run #1 finished" in texts(at, "success")
    assert "6 targets, 6 working, 0 blocked" in texts(at, "success")
    # The sidebar now shows the new store and run.
    assert at.sidebar.text_input(key="store_path").value == str(target)
    assert at.sidebar.selectbox(key="run_id").value == 1
    with open_store(target, create=False) as store:
        runs = store.runs()
    assert list(runs["status"]) == ["ok"] and int(runs["n_targets"].iloc[0]) == 6
    # The token went to the simulator (it answers nothing else), and nowhere else: not the state, the store
    # or the scan's log.
    state = repr({k: at.session_state[k] for k in at.session_state})
    assert SECRET_TOKEN not in state
    logs = list((tmp_path / "home" / "scans").glob("*.log"))
    assert len(logs) == 1
    for data in [Path(f"{target}"), Path(f"{target}-wal"), *logs]:
        assert not data.exists() or SECRET_TOKEN.encode() not in data.read_bytes()
    at.button(key="scan_open_overview").click().run()
    assert at.title[0].value == "Overview"
    assert {m.label: m.value for m in at.metric}["Working"] == "6"


def test_scan_run_level_failure_says_nothing_was_blocked(open_app, sim, sample_copy):
    with open_store(sample_copy, create=False) as store:
        new_run = int(store.runs()["id"].max()) + 1
    at = open_app(sample_copy, "app_pages/scan.py")
    fill_scan_form(at, sample_copy, sim.url, f"{sim.url}/retired/v1")
    at.button(key="scan_submit").click().run(timeout=60)
    wait_for_scan(at)
    errors = texts(at, "error")
    assert "failed at run level (endpoint_error)" in errors
    assert "Nothing from this run was blocked" in errors
    assert "410 Gone" in texts(at, "text")
    assert at.sidebar.selectbox(key="run_id").value == new_run
    assert "nothing from it was blocked" in texts(at, "warning")


@pytest.mark.parametrize("hub, words", [
    ("http://127.0.0.1:9", "127.0.0.1:9"),  # unreachable: nothing listens on the discard port
    ("not a url", "Hub URL: 'not a url' is not"),  # refused before any process starts, named by its field
])
def test_scan_errors_are_messages_not_tracebacks(open_app, sample_copy, hub, words):
    at = open_app(sample_copy, "app_pages/scan.py")
    fill_scan_form(at, sample_copy, hub, "http://127.0.0.1:9/v1")
    at.button(key="scan_submit").click().run(timeout=60)
    wait_for_scan(at)
    assert not at.exception
    assert words in texts(at, "text")
    assert at.error


def test_scan_form_presets_and_catalog_source(open_app, sample_copy):
    at = open_app(sample_copy, "app_pages/scan.py")
    at.button(key="scan_preset_sim").click().run()
    assert (at.text_input(key="scan_hub").value, at.text_input(key="scan_router").value) == (
        "http://127.0.0.1:8765", "http://127.0.0.1:8765/v1")
    at.button(key="scan_preset_hf").click().run()
    assert at.text_input(key="scan_router").value == "https://router.huggingface.co/v1"
    # A catalog file comes only as an upload: choosing the file source without one starts nothing.
    at.selectbox(key="scan_source").set_value("file")
    at.button(key="scan_submit").click().run()
    assert "needs a file" in texts(at, "text")
    assert "scan_watch" not in at.session_state
    assert at.selectbox(key="scan_source").value == "file"  # kept, to fix and submit again


def test_metadata_only_scan_from_the_page_is_predicted(open_app, make_sim, tmp_path):
    server = make_sim(synthetic_scenario(4, latency_ms=1.0))
    target = tmp_path / "predict.sqlite"
    at = open_app(tmp_path / "none.sqlite", "app_pages/scan.py")
    fill_scan_form(at, target, server.url, server.router_url)
    at.checkbox(key="scan_no_probe").check()
    at.button(key="scan_submit").click().run(timeout=60)
    wait_for_scan(at)
    assert "predicted" in texts(at, "success")
    with open_store(target, readonly=True) as store:
        assert list(store.runs()["mode"]) == ["predict"]
    assert sim_stats(server)["chat_requests"] == 0


def test_scan_page_reattaches_to_a_running_scan_and_resumes_a_stopped_one(open_app, make_sim, tmp_path):
    server = make_sim(token_scenario(30, latency_ms=100))
    store = tmp_path / "rca.sqlite"
    cfg = ScanConfig(hub_url=server.url, router_url=server.router_url, concurrency=1, timeout=5.0, retries=0,
                     token=SECRET_TOKEN)
    # A scan started elsewhere (another tab, a closed one, a shell): the page finds it in the store.
    job = background.start_scan(cfg, str(store), log_dir=tmp_path / "logs")
    deadline = time.monotonic() + 60
    while background.running_run(str(store)) is None:
        assert time.monotonic() < deadline and background.job_alive(job), background.log_tail(job)
        time.sleep(0.1)  # the poll interval
    at = open_app(store, "app_pages/scan.py")
    assert "scan_watch" in at.session_state
    assert at.button(key="scan_submit").disabled  # one scan at a time from this page
    bars = [p.proto.text for p in at.get("progress")]
    assert len(bars) == 1 and re.match(r"Run #1: (\d+ of 30 targets probed|reading the catalog)", bars[0]), bars

    # Killed before it finished: the page offers a resume, and the full command.
    os.killpg(job.pid, signal.SIGKILL)
    while background.exit_code(job) is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)  # the poll interval
    wait_for_scan(at)
    assert "Run #1 stopped before it finished" in texts(at, "error")
    at.run()
    assert "Run #1 stopped before it finished" in texts(at, "warning")
    assert dashboard.resume_command(1, str(store)) in [c.value for c in at.code]
    at.text_input(key="resume_token").set_value(SECRET_TOKEN)
    at.button(key="resume_submit").click().run()
    wait_for_scan(at)
    assert "Run #1 finished" in texts(at, "success"), texts(at, "error", "warning", "text", "code")
    assert "30 targets, 30 working" in texts(at, "success")


# --------------------------------------------------------------------------- pure helpers


def test_chart_filters():
    assert dashboard.chart_filters("reasons", [{"y": "gated"}, {"y": "gated"}, {"y": "bogus"}]) == {
        "reasons": ["gated"]}
    assert dashboard.chart_filters("tag_reason", [{"y": "text-generation", "legendgroup": "ok"},
                                                  {"y": "(none)", "legendgroup": "timeout"}]) == {
        "pipeline_tags": ["text-generation", "(none)"], "reasons": ["ok", "timeout"]}
    assert dashboard.chart_filters("latency", [{"x": 12.5}]) == {"reasons": ["ok"]}
    assert dashboard.chart_filters("trend", [{"x": 3, "legendgroup": "working"}]) == {"run_id": 3}
    assert dashboard.chart_filters("reasons", []) == {}
    with pytest.raises(ValueError):
        dashboard.chart_filters("pie", [{"x": 1}])


def test_block_reasons_default_is_the_cli_policy():
    assert dashboard.block_reasons(dashboard.default_block_reasons()) is None
    assert dashboard.block_reasons(list(reversed(dashboard.default_block_reasons()))) is None
    assert dashboard.block_reasons(["gated"]) == {"gated"}
    assert dashboard.block_reasons([]) == set()


def test_verdict_and_word():
    assert explain.verdict({"reason": "ok"}).kind == "works"
    assert explain.verdict({"reason": "gated", "blocked": True}).title.startswith("Blocked: gated")
    assert explain.verdict({"reason": "timeout", "blocked": False}).kind == "wait"
    assert explain.verdict({"reason": "endpoint_error"}).kind == "not_judged"
    assert explain.verdict({"reason": "non_chat_task", "predicted": True}).kind == "predicted"
    assert explain.verdict({"reason": "[x](http://e)"}).title.startswith("unknown")
    assert explain.word("non_chat_task") == "non_chat_task"
    assert explain.word("*bold*") == explain.word(None) == "unknown"


def test_store_fingerprint_sees_a_wal_commit(sample_copy):
    before = dashboard.store_fingerprint(sample_copy)
    with open_store(sample_copy) as store:
        store.create_run(source="hub", provider="x", hub_url=None, router_url=None, settings={})
        assert dashboard.store_fingerprint(sample_copy) != before
    assert dashboard.store_fingerprint(sample_copy.parent / "missing") == (0, 0, 0, 0)


def test_models_table_keeps_the_findings_index(sample_store):
    findings = latest(sample_store).findings
    table = dashboard.models_table(findings)
    assert list(table.columns) == dashboard.MODEL_COLUMNS
    assert sorted(table.index) == sorted(findings.index)  # the same rows and labels, in triage order
    assert str(table["http_status"].dtype) == "Int64"
    empty = dashboard.models_table(findings.iloc[0:0])
    assert empty.empty and list(empty.columns) == dashboard.MODEL_COLUMNS


def test_scan_time():
    from datetime import datetime, timezone

    now = datetime(2025, 7, 15, 12, 0, tzinfo=timezone.utc)
    assert dashboard.scan_time("2025-07-15T11:59:30.000Z", now) == ("just now", "2025-07-15 11:59 UTC")
    assert dashboard.scan_time("2025-07-15T11:48:00Z", now)[0] == "12m ago"
    assert dashboard.scan_time("2025-07-14T09:00:00Z", now)[0] == "27h ago"
    assert dashboard.scan_time("2025-07-01T12:00:00Z", now)[0] == "14d ago"
    assert dashboard.scan_time(None, now) == dashboard.scan_time("garbage", now) == ("unknown", "unknown")


def test_kpi_deltas():
    trend = pd.DataFrame({"run_id": [2, 3], "started_at": ["a", "b"], "total": [5, 5], "working": [3, 4],
                          "blocked": [2, 1], "transient": [0, 0]})
    assert dashboard.kpi_deltas(trend, 3) == {"working": 1, "blocked": -1, "transient": 0}
    assert dashboard.kpi_deltas(trend, 2) == {"working": None, "blocked": None, "transient": None}
    assert dashboard.kpi_deltas(trend, 9) == {"working": None, "blocked": None, "transient": None}


def test_reports_page_generates_and_offers_the_model_report(open_app, sample_copy, tmp_path, monkeypatch):
    at = open_app(sample_copy, "app_pages/reports.py")
    assert at.selectbox(key="report_model").value == ARCH
    at.button(key="report_generate").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    written = at.session_state["report_result"]
    html = Path(written["html"])
    assert html.exists() and html.parent == tmp_path / "home" / "reports"
    text = html.read_text()
    assert ARCH in text and "Conclusion" in text
    assert Path(written["markdown"]).exists()
    assert any("Report written" in s.value for s in at.success)


def test_reports_page_fleet_report(open_app, sample_copy):
    at = open_app(sample_copy, "app_pages/reports.py")
    at.radio(key="report_kind").set_value("Fleet RCA").run()
    at.button(key="report_generate").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert Path(at.session_state["report_result"]["html"]).name.startswith("catalog_rca-run")


def test_a_predicted_run_is_labelled_as_such(open_app, sim, tmp_path):
    store = tmp_path / "predicted.sqlite"
    result = run_cli("scan", "--hub-url", sim.url, "--router-url", sim.router_url, "--store", str(store),
                     "--no-probe")
    assert result.returncode == 0, result.stderr
    at = open_app(store)
    assert any("PREDICTED" in w.value for w in at.warning)
    assert any("(predicted)" in option for option in at.sidebar.selectbox(key="run_id").options)


def test_models_page_shows_failures_first(open_app, sample_store):
    at = open_app(sample_store, "app_pages/models.py")
    table = shown_table(at)
    blocked = list(table["blocked"])
    assert blocked[: sum(blocked)] == [True] * sum(blocked) and sum(blocked) > 0  # blocked rows lead
    actions = [a for a in table["action"] if a != "block"]
    first_ok = actions.index("none")
    assert "fix route" in actions[:first_ok] and "wait" in actions[:first_ok]  # then fixes and transient
    assert set(actions[first_ok:]) <= {"none", "fix setup"}


def test_the_detail_shows_what_came_back(open_app, sample_store):
    # Qwen2.5-1.5B is refused with model_not_supported on hf-inference: the body and headers are evidence
    at = open_app(sample_store, "app_pages/detail.py", model="Qwen/Qwen2.5-1.5B-Instruct", provider="hf-inference")
    assert "What came back" in texts(at, "subheader")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "400"
    assert "model_not_supported" in [c.value for c in at.code]  # the whole code, as text that wraps
    assert '"code": "model_not_supported"' in texts(at, "code")  # the body excerpt, as text
    headers = frame(at, "header", "value", exact=True)
    assert "content-type" in set(headers["header"])


def test_target_tiles_put_a_failed_runs_targets_under_not_judged(sample_store):
    with open_store(sample_store, readonly=True) as store:
        failed = int(store.runs().query("status == 'failed'")["id"].max())  # the account-level run
        findings = store.findings(failed)
    tiles = views.target_tiles(findings)
    assert tiles["not judged"] == len(findings) > 0 and tiles["blocked"] == 0
    assert sum(tiles.values()) == len(findings)


def test_a_working_model_shows_no_empty_evidence_sections(open_app, sample_store):
    at = open_app(sample_store, "app_pages/detail.py", model=ARCH, provider="hf-inference")
    assert "nan" not in texts(at, "code").split()
    subheaders = texts(at, "subheader")
    assert "Same cause elsewhere" not in subheaders and "What came back" not in subheaders
    assert "Request settings that worked" not in texts(at, "caption")


def test_run_problem_tells_a_running_run_from_a_killed_one():
    import socket
    import subprocess
    import sys

    here = socket.gethostname()
    title, detail = dashboard.run_problem(_run(id=3, status="running", pid=os.getpid(), host=here), "s.db")
    assert "still running" in title and detail is None
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    title, detail = dashboard.run_problem(_run(id=3, status="running", pid=gone.pid, host=here), "s.db")
    assert "stopped before it finished" in title
    assert detail == "Finish it with: python -m analysis scan --resume 3 --store s.db"


def test_progress_text_and_run_summary():
    from datetime import datetime, timezone

    now = datetime(2025, 7, 15, 12, 0, 30, tzinfo=timezone.utc)
    progress = background.ScanProgress(7, "running", "probe", True, 37, 12, "2025-07-15T11:59:00Z",
                                       "2025-07-15T12:00:25Z")
    assert dashboard.progress_text(progress, now) == "Run #7: 12 of 37 targets probed, last result saved 5 s ago."
    reading = background.ScanProgress(7, "running", "probe", True, 0, 0, None, None)
    assert dashboard.progress_text(reading, now) == "Run #7: reading the catalog..."
    kind, title, _ = dashboard.run_summary(_run(id=7, status="ok", n_targets=37, n_ok=30, n_blocked=5,
                                            n_transient=2, duration_s=3.25, mode="probe"))
    assert (kind, title) == ("ok", "Run #7 finished in 3.2 s: 37 targets, 30 working, 5 blocked, 2 transient.")
    kind, title, detail = dashboard.run_summary(_run(id=8, status="failed", failure_reason="auth_error",
                                                 failure_message="401 Invalid credentials"))
    assert kind == "failed" and "Nothing from this run was blocked" in title and detail == "401 Invalid credentials"


def _run(**values: object) -> Run:
    """A stored run as the dashboard gets it, with the fields a test does not care about filled in."""
    return Run(**{"started_at": "2025-07-15T12:00:00Z", "source": "hub", "provider": "hf-inference", **values})


def test_a_postgresql_store_password_is_never_shown(open_app, sample_store, postgres_server, tmp_path):
    """RCA_STORE with a password: the dashboard reads the store, and shows its location only without it."""
    import os

    from analysis.store import copy_store

    role = f"rca_view_{os.getpid()}"
    postgres_server.admin(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-shown-nowhere'")
    url = postgres_server.new_database(owner=role).replace(f"{role}@", f"{role}:pw-shown-nowhere@")
    copy_store(str(sample_store), url)
    at = open_app(url)
    assert at.sidebar.text_input(key="store_path").value == url.replace(":pw-shown-nowhere", "")
    assert not at.error and at.sidebar.selectbox(key="run_id").value is not None  # the store was read
    for page in ("app_pages/scan.py", "app_pages/blocklist.py", "app_pages/overview.py"):
        at.switch_page(page).run()
        assert not at.exception
        shown = " ".join(str(e.value) for kind in ("text_input", "caption", "code", "markdown", "text")
                         for e in getattr(at, kind))
        assert "pw-shown-nowhere" not in shown
    assert "pw-shown-nowhere" not in dashboard.resume_command(3, url)
