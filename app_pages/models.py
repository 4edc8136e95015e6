"""Models page: every target of the run, filterable and sortable; a row opens its detail, a link its Hub page."""

from __future__ import annotations

import hashlib
from typing import Any

import streamlit as st

from analysis.outputs import dashboard, views
from analysis.outputs.export import findings_bytes
from app_pages import shared

# Triage first, in a 1400 px window: what it is, the verdict, what to do, and what came back, before anything
# that needs a sideways scroll.
COLUMNS = {
    "model_id": st.column_config.TextColumn("Model", width=250),
    "provider": st.column_config.TextColumn("Provider", width=95),
    "reason": st.column_config.TextColumn("Reason", width=160),
    "action": st.column_config.TextColumn("Action", width=75),
    "http_status": st.column_config.NumberColumn("HTTP", format="%d", width=50),
    "detail": st.column_config.TextColumn("What came back", width=280),
    "message": st.column_config.TextColumn("User-facing message", width="large"),
    "blocked": st.column_config.CheckboxColumn("Blocked"),
    "pipeline_tag": st.column_config.TextColumn("Pipeline tag"),
    "mapping_status": st.column_config.TextColumn("Mapping"),
    "in_router_list": st.column_config.CheckboxColumn("Router lists it"),
    "latency_ms": st.column_config.NumberColumn("Latency (ms)", format="%.0f"),
    "attempts": st.column_config.NumberColumn("Attempts"),
    "hub_page": st.column_config.LinkColumn("Hugging Face", display_text="open ↗", width="small"),
}
_BLOCKED_LABELS = {value: label for label, value in dashboard.BLOCKED_CHOICES.items()}


def _valid(name: str, value: Any, options: dict[str, list[str]]) -> Any:
    """A filter value the widget accepts: choices that still exist in this run."""
    if name == "blocked":
        return value if value in dashboard.BLOCKED_CHOICES else _BLOCKED_LABELS.get(value, "all")
    if name == "search":
        return str(value or "")
    if name == "view":
        return value if value in shared.MODEL_VIEWS else shared.MODEL_VIEWS[0]
    return [v for v in (value or []) if v in options[name]]


def _seed_filters(options: dict[str, list[str]]) -> None:
    # Widget state is dropped while another page shows, so the filters live on
    # in "model_filters"; a chart click or a button elsewhere sets them there.
    state = st.session_state
    saved = state.get("model_filters") or {}
    apply = state.pop("apply_model_filters", False)
    for name, key in shared.FILTER_KEYS.items():
        current = state[key] if key in state and not apply else saved.get(name)
        value = _valid(name, current, options)
        if key not in state or state[key] != value:
            state[key] = value


def _clear_filters() -> None:
    shared.set_model_filters()


ctx = shared.require_run()
run_view = shared.view(ctx)
findings = run_view.findings
table = shared.load_models_table(ctx.store_path, ctx.version, ctx.run_id)
options = dashboard.filter_options(findings)
_seed_filters(options)

st.title("Models")
view_choice = st.segmented_control("Show", shared.MODEL_VIEWS, key="models_view", label_visibility="collapsed",
                                   help="Saved filters: every target; what needs an operator now (blocked, or a "
                                        "route or request fix); the targets whose verdict is new since the previous "
                                        "successful run of this scope.") or shared.MODEL_VIEWS[0]
changed = shared.load_changed_keys(ctx.store_path, ctx.version, ctx.run_id) \
    if view_choice == "new since previous run" else None
if view_choice == "new since previous run" and changed is None:
    st.caption("No earlier successful run of this scope: every target is new.")
row = st.columns([3, 1, 2, 2])
reasons = row[0].multiselect("Reason", options["reasons"], key="models_reasons", placeholder="any reason")
blocked = row[1].selectbox("Blocked", list(dashboard.BLOCKED_CHOICES), key="models_blocked")
tags = row[2].multiselect("Pipeline tag", options["pipeline_tags"], key="models_tags", placeholder="any tag")
statuses = row[3].multiselect("Mapping status", options["mapping_statuses"], key="models_statuses",
                              placeholder="any status",
                              help="The probed provider's status in the catalog's provider mapping.")
row = st.columns([6, 1])
search = row[0].text_input("Search", key="models_search", placeholder="model id, detail or message")
row[1].button("Clear filters", key="models_clear", on_click=_clear_filters, width="stretch")

filters = {"reasons": reasons, "blocked": dashboard.BLOCKED_CHOICES[blocked], "pipeline_tags": tags,
           "mapping_statuses": statuses, "search": search}
st.session_state["model_filters"] = {**filters, "view": view_choice}
picked = views.filter_findings(findings, **filters, needs_action=view_choice == "needs action",
                               keys=changed).index
shown = table[table.index.isin(picked)]  # the table's triage order: failures first

st.caption(f"{len(shown)} of {len(table)} targets in run #{ctx.run_id}. Select a row to open its evidence; "
           "click a column header to sort.")
# One table widget per (store, run, filters): a selection never outlives the rows it was made on.
signature = hashlib.sha1(repr((ctx.store_path, ctx.run_id, view_choice, sorted(filters.items()))).encode()
                         ).hexdigest()[:12]
table_key = f"models_table_{signature}"
# Reason and action as coloured badges, in the palette the charts and reports use.
styled = shown.style.map(dashboard.reason_badge, subset=["reason"]).map(dashboard.action_badge, subset=["action"])
event = st.dataframe(styled, key=table_key, on_select="rerun", selection_mode="single-row", hide_index=True,
                     column_config=COLUMNS, column_order=list(COLUMNS), width="stretch",
                     height=560 if len(shown) > 15 else "auto")
rows = list(event.selection.rows)
picked = (table_key, rows[0]) if rows and rows[0] < len(shown) else None
# Opened already: coming back must not bounce to the detail page again.
if picked is not None and picked != st.session_state.get("models_opened"):
    st.session_state["models_opened"] = picked
    target = shown.iloc[rows[0]]
    shared.show_detail(str(target["model_id"]), str(target["provider"]))
st.session_state["models_opened"] = picked

# Built on click only: a CSV of 20,000 findings would slow every filter change.
st.download_button("Download these rows (findings CSV)", key="models_download",
                   file_name=f"findings-run{ctx.run_id}.csv", mime="text/csv", on_click="ignore",
                   data=lambda: findings_bytes(findings.loc[shown.index], "csv"))
