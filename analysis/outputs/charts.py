"""Plotly figures shared by the dashboard and the reports.  Frames in, figures out.

One palette (:data:`REASON_COLORS`): every reason has a colour of its own, in the hue
of its family (green works; reds and browns block; ambers and oranges are
transient; blues are our own route or request to fix; purples and greys are
run-level faults of the setup), so a chart in the app and the same chart in a
report read alike.  Counts of failures sit next to hundreds of working targets,
so the reason chart uses a log axis, and the pipeline-tag chart leaves working
targets out.  Every title and axis says what it counts, in words.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from analysis.taxonomy import REASON_NAMES

__all__ = ["REASON_COLORS", "ACTION_COLORS", "SERIES_COLORS", "reason_bar", "tag_reason_bar", "latency_histogram",
           "trend_lines"]

REASON_COLORS: dict[str, str] = {
    # run-level: a fault of the token, the credits or the endpoint (purples, grey)
    "auth_error": "#6a1b9a",
    "payment_required": "#9575cd",
    "endpoint_error": "#78909c",
    # ours to fix: the route, the request (blues)
    "route_mismatch": "#1565c0",
    "probe_error": "#00acc1",
    # blocks the model (reds, pinks, browns)
    "gated": "#b71c1c",
    "non_chat_task": "#e53935",
    "provider_mapping_error": "#ad1457",
    "not_found": "#ff8a80",
    "not_supported": "#8d6e63",
    "persistent_failure": "#3e2723",
    # transient: wait and scan again (ambers, oranges)
    "rate_limited": "#f9a825",
    "timeout": "#ffe082",
    "upstream_error": "#ef6c00",
    "connection_error": "#ffcc80",
    "invalid_response": "#c0ca33",
    # works
    "ok": "#2e7d32",
}
# Each action in the colour of the reasons that call for it (the Models page's badges).
ACTION_COLORS = {"block": "#e53935", "fix route": "#1565c0", "fix probe": "#00acc1", "wait": "#f9a825",
                 "fix setup": "#6a1b9a", "none": "#2e7d32"}
# The trend's series, in the colours of their families.
SERIES_COLORS = {"working": REASON_COLORS["ok"], "blocked": "#c62828", "transient": REASON_COLORS["rate_limited"]}
_MARGIN = dict(t=50, b=10, l=10, r=10)


def _as_text(labels: pd.Series) -> pd.Series:
    # Plotly.js reads a small HTML subset in labels (links included): upstream text is shown as text.
    return labels.astype(str).map(html.escape)


def _log_range(largest: int) -> list[float]:
    """A log axis from just under 1 to past the largest count, so a bar of 1 is visible and its label fits."""
    return [math.log10(0.7), math.log10(max(largest, 1) * 3)]


def reason_bar(counts: pd.DataFrame) -> go.Figure:
    """Targets per reason (``reason_counts``): one bar per reason in taxonomy order, on a log axis.

    Horizontal, so reason names are read whole; a click reports the reason as the point's ``y``.
    """
    order = [r for r in REASON_NAMES if r in set(counts["reason"])]
    fig = px.bar(counts, y="reason", x="count", color="reason", orientation="h", color_discrete_map=REASON_COLORS,
                 category_orders={"reason": order}, text="count", log_x=True,
                 title="Targets per reason (log scale)")
    fig.update_traces(textposition="outside", cliponaxis=False,
                      hovertemplate="%{y}: %{x} targets<extra></extra>")
    largest = int(counts["count"].max()) if len(counts) else 1
    fig.update_layout(showlegend=False, yaxis_title=None, xaxis_title="targets", margin=_MARGIN,
                      height=max(260, 60 + 28 * len(order)),
                      xaxis=dict(range=_log_range(largest), dtick=1, tickformat="d"))
    return fig


def tag_reason_bar(tag_counts: pd.DataFrame) -> go.Figure:
    """Failing targets per pipeline tag, stacked by reason; working targets are left out (the reason chart has
    them).  Tags come from upstream and are escaped; a click reports the tag as ``y`` and the reason as
    ``legendgroup``."""
    failing = tag_counts[tag_counts["reason"] != "ok"]
    failing = failing.assign(pipeline_tag=_as_text(failing["pipeline_tag"]))
    totals = failing.groupby("pipeline_tag")["count"].sum().sort_values()
    fig = px.bar(failing, y="pipeline_tag", x="count", color="reason", orientation="h",
                 color_discrete_map=REASON_COLORS,
                 category_orders={"reason": [r for r in REASON_NAMES if r != "ok"],
                                  "pipeline_tag": list(totals.index[::-1])},
                 labels={"reason": "reason", "pipeline_tag": "pipeline tag", "count": "targets"},
                 title="Failing targets per pipeline tag (working targets not shown)")
    fig.update_traces(hovertemplate="%{y}, %{fullData.name}: %{x} targets<extra></extra>")
    # Tall enough for one legend row per reason: a shorter chart turns the legend into a scrolling box.
    fig.update_layout(barmode="stack", yaxis_title=None, xaxis_title="failing targets", margin=_MARGIN,
                      height=max(300, 60 + 26 * len(totals), 120 + 24 * failing["reason"].nunique()),
                      xaxis=dict(tickformat="d", rangemode="tozero"), legend=dict(title_text=None))
    fig.update_xaxes(dtick=_integer_step(int(totals.max()) if len(totals) else 1))
    return fig


def _integer_step(largest: int) -> int:
    """A whole tick step giving at most about eight ticks: counts have no half-targets."""
    scale = 1
    while True:
        for step in (scale, 2 * scale, 5 * scale):
            if largest / step <= 8:
                return step
        scale *= 10


def latency_histogram(latencies: pd.Series) -> go.Figure:
    """Distribution of working targets' latency."""
    fig = px.histogram(latencies.to_frame("latency_ms"), x="latency_ms", nbins=30,
                       color_discrete_sequence=[REASON_COLORS["ok"]],
                       title="Latency of working targets")
    fig.update_traces(hovertemplate="%{x} ms: %{y} targets<extra></extra>")
    # Plotly picks the bins; half as many bins as asked bounds its tallest bar from above.
    tallest = int(np.histogram(latencies, bins=15)[0].max()) if len(latencies) else 1
    fig.update_layout(xaxis_title="latency (ms)", yaxis_title="working targets", margin=_MARGIN, bargap=0.05,
                      yaxis=dict(tickformat="d", rangemode="tozero", dtick=_integer_step(tallest)))
    return fig


def trend_lines(trend: pd.DataFrame) -> go.Figure:
    """Working, blocked and transient targets across the successful runs of a scope (draw it from two runs)."""
    long = trend.melt(id_vars=["run_id", "started_at"], value_vars=list(SERIES_COLORS),
                      var_name="series", value_name="targets")
    fig = px.line(long, x="run_id", y="targets", color="series", markers=True, color_discrete_map=SERIES_COLORS,
                  title="Working, blocked and transient targets per run")
    fig.update_traces(hovertemplate="run #%{x}: %{y} targets<extra>%{fullData.name}</extra>")
    runs = [int(r) for r in trend["run_id"]]
    fig.update_layout(xaxis_title="run", yaxis_title="targets", legend_title_text=None, margin=_MARGIN,
                      xaxis=dict(tickmode="array", tickvals=runs, ticktext=[f"#{r}" for r in runs]),
                      yaxis=dict(tickformat="d", rangemode="tozero",
                                 dtick=_integer_step(int(long["targets"].max()) if len(long) else 1)))
    return fig
