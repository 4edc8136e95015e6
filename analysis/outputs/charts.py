"""Plotly figures shared by the dashboard and the notebooks.  Frames in, figures out."""

from __future__ import annotations

import html

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from analysis.taxonomy import BLOCKING, REASON_NAMES, RUN_LEVEL, TRANSIENT

__all__ = ["REASON_COLORS", "reason_bar", "tag_reason_bar", "latency_histogram", "trend_lines"]


def _color(reason: str) -> str:
    if reason == "ok":
        return "#2e7d32"
    if reason in BLOCKING:
        return "#c62828"
    if reason in TRANSIENT:
        return "#f9a825"
    if reason in RUN_LEVEL:
        return "#6a1b9a"
    return "#1565c0"  # route_mismatch, probe_error: fix something of ours


REASON_COLORS = {r: _color(r) for r in REASON_NAMES}


def reason_bar(counts: pd.DataFrame) -> go.Figure:
    """Bar chart of ``reason_counts`` (taxonomy order, red = blocks, amber = transient)."""
    fig = px.bar(counts, x="reason", y="count", color="reason", color_discrete_map=REASON_COLORS,
                 category_orders={"reason": list(REASON_NAMES)}, text="count", title="Models per reason")
    fig.update_layout(showlegend=False, xaxis_title=None, yaxis_title="targets", margin=dict(t=40, b=10))
    return fig


def _as_text(labels: pd.Series) -> pd.Series:
    # Plotly.js reads a small HTML subset in labels (links included): upstream text is shown as text.
    return labels.astype(str).map(html.escape)


def tag_reason_bar(tag_counts: pd.DataFrame) -> go.Figure:
    """Stacked bars: pipeline tag x reason.  Tags come from upstream and are escaped."""
    tag_counts = tag_counts.assign(pipeline_tag=_as_text(tag_counts["pipeline_tag"]))
    fig = px.bar(tag_counts, x="pipeline_tag", y="count", color="reason", color_discrete_map=REASON_COLORS,
                 category_orders={"reason": list(REASON_NAMES)}, title="Pipeline tag x reason")
    fig.update_layout(barmode="stack", xaxis_title=None, yaxis_title="targets", margin=dict(t=40, b=10))
    return fig


def latency_histogram(latencies: pd.Series) -> go.Figure:
    """Distribution of working models' latency."""
    fig = px.histogram(latencies.to_frame("latency_ms"), x="latency_ms", nbins=30,
                       title="Latency of working models (ms)")
    fig.update_layout(xaxis_title="ms", yaxis_title="models", margin=dict(t=40, b=10))
    return fig


def trend_lines(trend: pd.DataFrame) -> go.Figure:
    """Working and blocked counts across successful runs."""
    long = trend.melt(id_vars=["run_id", "started_at"], value_vars=["working", "blocked", "transient"],
                      var_name="count_of", value_name="targets")
    fig = px.line(long, x="run_id", y="targets", color="count_of", markers=True,
                  color_discrete_map={"working": "#2e7d32", "blocked": "#c62828", "transient": "#f9a825"},
                  title="Working and blocked across runs")
    fig.update_layout(xaxis_title="run", xaxis=dict(tickmode="linear", dtick=1), margin=dict(t=40, b=10))
    return fig
