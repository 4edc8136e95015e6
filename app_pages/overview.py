"""Overview page: KPI tiles, the four charts (clickable into the model list) and what changed since last run."""

from __future__ import annotations

from datetime import datetime, timezone

import streamlit as st

from analysis.outputs import charts, dashboard, views
from analysis.taxonomy import TRANSIENT
from app_pages import shared


def _on_chart_select(chart: str, key: str) -> None:
    # A callback fires once per new selection, so coming back to this page does
    # not replay an old click.
    event = st.session_state.get(key)
    points = list(event["selection"]["points"]) if event else []
    selected = dashboard.chart_filters(chart, points)
    if "run_id" in selected:
        st.session_state["pending_run"] = selected["run_id"]
    elif selected:
        shared.set_model_filters(**selected)
        st.session_state["goto_models"] = True


def _chart(fig, chart: str, help_text: str) -> None:  # noqa: ANN001 - a Plotly figure
    key = f"chart_{chart}"
    st.plotly_chart(fig, key=key, on_select=lambda: _on_chart_select(chart, key), selection_mode="points",
                    width="stretch")
    st.caption(help_text)


if st.session_state.pop("goto_models", False):
    st.switch_page(shared.MODELS_PAGE)

ctx = shared.require_run()
run_view = shared.view(ctx)
figures = views.kpis(run_view)
trend = shared.load_trend(ctx.store_path, ctx.version, run_view.run.source, run_view.run.provider)
deltas = dashboard.kpi_deltas(trend, ctx.run_id)

age, when = dashboard.scan_time(figures["last_scan_at"], datetime.now(timezone.utc))

st.title("Overview")
st.caption(f"Run #{ctx.run_id}, finished {when} ({age}"
           + (f", {figures['duration_s']:.1f} s" if figures["duration_s"] is not None else "")
           + f"): {figures['targets']} targets over {figures['models']} models. Each target is in one tile: "
             "the tiles add up to the targets." + (f" {figures['spend']}" if figures["spend"] else ""))

tiles = figures["tiles"]
columns = st.columns(len(tiles))
helps = {"working": "Answered a chat completion.", "blocked": "On the blocklist of this run.",
         "route fix": "Works through another route: fix our routing.",
         "probe fix": "Works with other request settings: fix the probe or send them.",
         "transient": "Rate limits, timeouts, 5xx, resets: never blocked on their own.",
         "not judged": "A run-level fault of the token, credits, endpoint or account, or a prediction."}
trend_of = {"working": "working", "blocked": "blocked", "transient": "transient"}
for column, (name, value) in zip(columns, tiles.items()):
    series = trend_of.get(name)
    column.metric(name.capitalize(), value, deltas.get(series) if series else None, border=True, help=helps[name],
                  delta_color="inverse" if name in ("blocked", "transient") else "normal",
                  chart_data=list(trend[series]) if series and len(trend) > 1 else None)

links = st.columns(4)
if links[0].button("Show blocked models", key="overview_show_blocked", width="stretch"):
    shared.show_models(blocked=True)
if links[1].button("Show transient failures", key="overview_show_transient", width="stretch",
                   disabled=figures["transient"] == 0):
    shared.show_models(reasons=sorted(TRANSIENT & set(run_view.findings["reason"])))
if links[2].button("Show working models", key="overview_show_working", width="stretch"):
    shared.show_models(reasons=["ok"])
if links[3].button("Show all models", key="overview_show_all", width="stretch"):
    shared.show_models()

if run_view.findings.empty:
    shared.say("info", f"Run #{ctx.run_id} has no findings: it stopped before probing any model.")
    st.stop()

left, right = st.columns(2)
with left:
    _chart(charts.reason_bar(views.reason_counts(run_view.findings)), "reasons",
           "A log scale, so that a reason seen once stays visible next to hundreds of working targets. Click a bar "
           "to list the models with that reason.")
with right:
    _chart(charts.tag_reason_bar(views.tag_reason_counts(run_view.findings)), "tag_reason",
           "Click a segment to list the models with that pipeline tag and reason.")
left, right = st.columns(2)
with left:
    _chart(charts.latency_histogram(views.working_latencies(run_view.findings)), "latency",
           "Click a bar to list the working models.")
with right:
    if len(trend) >= 2:  # one point is not a trend
        _chart(charts.trend_lines(trend), "trend", "Successful runs of this scope. Click a point to open that run.")
    else:
        st.caption("The trend across runs appears once this scope has two successful runs.")

st.subheader("Top causes")
causes = views.top_causes(run_view.findings)
if causes.empty:
    st.caption("No failures in this run.")
else:
    st.caption("Failures grouped by error signature (status, code and message with ids and numbers replaced): "
               "one cause seen on many models is one row. A cause shared by most of a run is a run-level suspect.")
    st.dataframe(causes, key="overview_causes", hide_index=True, width="stretch",
                 # The cause is what the row is about: it gets the room, the counts the least.
                 column_config={"error_signature": st.column_config.TextColumn("Cause (error signature)",
                                                                               width=480),
                                "models": st.column_config.NumberColumn("Models", width=55),
                                "targets": st.column_config.NumberColumn("Targets", width=55),
                                "reasons": st.column_config.TextColumn("Reasons", width=150),
                                "example": st.column_config.TextColumn("Example", width=190)})

previous, diff = shared.load_diff(ctx.store_path, ctx.version, ctx.run_id)
st.subheader("What changed since the previous run")
if previous is None:
    st.caption("No earlier successful run of this scope to compare with.")
elif diff.empty:
    st.caption(f"Nothing changed since run #{previous}.")
else:
    st.caption(f"Since run #{previous}: newly blocked, recovered and changed reasons.")
    st.dataframe(diff, key="overview_diff", hide_index=True, width="stretch", column_config=shared.headers(diff))
