"""Pure helpers for the Streamlit dashboard (``app.py``): choices, tables and texts it shows.

The dashboard stays thin: it reads widgets, calls :mod:`analysis.outputs.views` and the
functions here, and renders.  Nothing here imports Streamlit, so every rule the
dashboard follows (which store opens by default, what a chart click filters,
which reasons a blocklist uses) is tested without a browser.

Texts come as a ``(title, detail)`` pair: the title is ours and may be rendered
as markdown; the detail carries upstream text (ids, URLs, error messages) and
must be shown as plain text (``st.text``, ``st.code``), because markdown would
turn a URL in an error message into a live link.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import config
from analysis.errors import RcaError
from analysis.outputs.background import ScanProgress, owner_alive, scan_alive
from analysis.outputs.explain import word
from analysis.outputs.views import hf_model_url, mapping_status_of
from analysis.schema import Run
from analysis.taxonomy import BLOCKING, REASON_NAMES

__all__ = [
    "BLOCKED_CHOICES",
    "MODEL_COLUMNS",
    "StoreChoice",
    "shown_store",
    "reason_badge",
    "action_badge",
    "is_database",
    "choose_store",
    "env_token_allowed",
    "is_sample_store",
    "store_fingerprint",
    "models_table",
    "filter_options",
    "chart_filters",
    "default_block_reasons",
    "block_reasons",
    "run_problem",
    "resume_command",
    "run_level_episodes",
    "catalog_facts",
    "kpi_deltas",
    "scan_time",
    "run_summary",
    "progress_text",
]

# Labels of the models page's "blocked" filter -> ``filter_findings(blocked=...)``.
BLOCKED_CHOICES: dict[str, bool | None] = {"all": None, "blocked": True, "not blocked": False}
_TRIAGE = {"fix route": 1, "fix probe": 1, "wait": 2, "fix setup": 3, "none": 5}
MODEL_COLUMNS = ["model_id", "provider", "reason", "action", "http_status", "detail", "message", "blocked",
                 "pipeline_tag", "mapping_status", "in_router_list", "latency_ms", "attempts", "hub_page"]


@dataclass(frozen=True)
class StoreChoice:
    """The store the dashboard opens first, and why."""

    path: Path | str  # a file, or a database URL as given
    is_sample: bool
    why: str


def is_sample_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is the built-in sample store (``sample.sqlite`` in the data dir)."""
    try:
        return Path(path).resolve() == config.sample_store().resolve()
    except OSError:
        return False


def choose_store(explicit: str | None, default_store: Path | None = None) -> StoreChoice:
    """The store to open: ``explicit`` (``RCA_STORE`` or ``--store``), else ``default_store``
    (``rca.sqlite`` in the data dir) if it exists, else the sample: only the app falls back to it, and says so.

    An explicit path is used even if it does not exist, so a typo shows as an
    error instead of silently falling back to sample data.
    """
    if explicit:
        if is_database(explicit):
            return StoreChoice(explicit, False, "chosen with RCA_STORE or --store")
        path = Path(explicit).expanduser()
        return StoreChoice(path, is_sample_store(path), "chosen with RCA_STORE or --store")
    default_store = default_store or config.default_store()
    if default_store.exists():
        return StoreChoice(default_store, False, "the default store")
    return StoreChoice(config.sample_store(), True, "no store yet: the built-in offline sample")


def is_database(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a database server (``postgresql://...``) rather than a file."""
    from analysis.store import store_backend

    try:
        return store_backend(str(location)) != "sqlite"
    except RcaError:
        return False  # an unsupported scheme: opening it says so


def store_fingerprint(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """Modification time and size of the store and its WAL file: a cache key that changes with every commit.

    A WAL store commits into ``-wal`` and only later checkpoints into the main
    file, so the main file alone would hide a new run.  A database store gives its own change marker.
    """
    if is_database(path):
        from analysis.store import open_store

        with open_store(str(path), readonly=True) as store:
            return store.change_marker()
    parts: list[int] = []
    for name in (str(path), f"{path}-wal"):
        try:
            stat = os.stat(name)
            parts += [stat.st_mtime_ns, stat.st_size]
        except OSError:
            parts += [0, 0]
    return tuple(parts)


def models_table(findings: pd.DataFrame) -> pd.DataFrame:
    """The models page's rows (``MODEL_COLUMNS``), failures first, same index as ``findings`` so filters can pick
    rows.

    ``hub_page`` is the model's Hugging Face URL; ``mapping_status`` shows
    ``(none)`` when the catalog does not map the probed provider.
    """
    table = pd.DataFrame(index=findings.index)
    for column in MODEL_COLUMNS:
        if column == "hub_page":
            table[column] = findings["model_id"].map(hf_model_url) if len(findings) else pd.Series(dtype=str)
        elif column == "mapping_status":
            table[column] = mapping_status_of(findings) if len(findings) else pd.Series(dtype=str)
        elif column in findings.columns:
            table[column] = findings[column]
        else:
            table[column] = None
    table["http_status"] = pd.to_numeric(table["http_status"], errors="coerce").astype("Int64")
    table["in_router_list"] = table["in_router_list"].astype("boolean")
    table["blocked"] = table["blocked"].astype(bool)
    # Triage first: blocked, then our own faults to fix (route, probe), then transient, then the rest.
    rank = [0 if b else _TRIAGE.get(a, 4) for b, a in zip(table["blocked"], table["action"])]
    order = sorted(range(len(table)), key=lambda i: (rank[i], str(table["model_id"].iat[i]),
                                                     str(table["provider"].iat[i])))
    return table.iloc[order]


def filter_options(findings: pd.DataFrame) -> dict[str, list[str]]:
    """Choices for the models page's filters: reasons (taxonomy order), pipeline tags and mapping statuses seen."""
    if findings.empty:
        return {"reasons": [], "pipeline_tags": [], "mapping_statuses": []}
    seen = set(findings["reason"])
    tags = findings["pipeline_tag"].fillna("(none)").replace("", "(none)")
    return {"reasons": [r for r in REASON_NAMES if r in seen] + sorted(seen - set(REASON_NAMES)),
            "pipeline_tags": sorted(set(tags)),
            "mapping_statuses": sorted(set(mapping_status_of(findings)))}


def _distinct(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(v for v in values if v is not None and v != ""))


def chart_filters(chart: str, points: list[dict[str, Any]]) -> dict[str, Any]:
    """What a click on an overview chart selects, from the points Streamlit reports.

    - ``reasons`` (reason bars): the clicked reasons;
    - ``tag_reason`` (stacked bars of failures): the clicked pipeline tags, and the reasons of
      the clicked segments (Plotly Express puts the colour value in ``legendgroup``);
    - ``latency`` (working models' latency): the working models;
    - ``trend`` (runs): ``{"run_id": N}`` for the clicked run.

    Returns ``{}`` when nothing usable was clicked.
    """
    if not points:
        return {}
    # The reason and tag charts are horizontal bars: the category is the point's y.
    if chart == "reasons":
        reasons = [r for r in _distinct([p.get("y") for p in points]) if r in REASON_NAMES]
        return {"reasons": reasons} if reasons else {}
    if chart == "tag_reason":
        tags = [str(t) for t in _distinct([p.get("y") for p in points])]
        reasons = [r for r in _distinct([p.get("legendgroup") for p in points]) if r in REASON_NAMES]
        selected: dict[str, Any] = {}
        if tags:
            selected["pipeline_tags"] = tags
        if reasons:
            selected["reasons"] = reasons
        return selected
    if chart == "latency":
        return {"reasons": ["ok"]}
    if chart == "trend":
        runs = _distinct([p.get("x") for p in points])
        try:
            return {"run_id": int(runs[-1])} if runs else {}
        except (TypeError, ValueError):
            return {}
    raise ValueError(f"unknown chart {chart!r}")


def default_block_reasons() -> list[str]:
    """The taxonomy's blocking reasons, in taxonomy order: the blocklist page's default choice."""
    return [r for r in REASON_NAMES if r in BLOCKING]


def block_reasons(selected: list[str] | None) -> set[str] | None:
    """``reasons`` for :func:`analysis.export.blocklist_bytes` from the page's choice.

    The default choice maps to ``None`` (the stored ``blocked`` flag), which is
    what ``python -m analysis export blocklist`` uses without ``--reasons``, so
    the default download is byte for byte the CLI's.
    """
    chosen = set(selected or [])
    return None if chosen == set(default_block_reasons()) else chosen


def run_problem(run: Run,
                store_path: str | os.PathLike[str] | None = None) -> tuple[str, str | None] | None:
    """``(title, detail)`` of a run that did not succeed or only predicted; ``None`` for an ok probing run.

    The resume hint names the store: without ``--store`` it would open (and, before
    the fix, create) the default store instead of this one.
    """
    status = word(run.status)
    if status == "ok" and run.mode == "predict":
        return (f"Run #{int(run.id)} is a metadata-only scan: every verdict is PREDICTED.",
                "No chat completion was sent (scan --no-probe). Predictions never block; run a probing scan to "
                "confirm them.")
    if status == "ok":
        return None
    if status == "partial":
        faulted = ", ".join(sorted(p or "the bare route" for p in (run.faulted or {})))
        return (f"Run #{int(run.id)} is partial: {faulted} had a run-level fault and were not judged; their "
                "blocklist rows are carried from their last successful run.",
                str(run.failure_message or "no message"))
    if status == "failed":
        return (f"Run #{int(run.id)} failed ({word(run.failure_reason)}). A failed run never feeds a "
                "blocklist: nothing from it was blocked.", str(run.failure_message or "no message"))
    if status == "running" and (scan_alive(str(store_path), run) if store_path is not None
                                else owner_alive(run.pid, run.host)):
        return (f"Run #{int(run.id)} is still running: its results so far are incomplete. The Scan page shows "
                "its progress.", None)
    stopped = "stopped before it finished (its process is gone)" if status == "running" else f"is {status}"
    return (f"Run #{int(run.id)} {stopped}: its results are incomplete.",
            f"Finish it with: {resume_command(int(run.id), store_path)}")


def shown_store(location: str | os.PathLike[str]) -> str:
    """A store as the dashboard shows it: a file as it is, a database URL without its password."""
    from analysis.store import display_location

    return display_location(str(location))


def resume_command(run_id: int, store_path: str | os.PathLike[str] | None) -> str:
    """The full command that resumes ``run_id`` in ``store_path``, quoted for a POSIX shell (a database URL
    without its password: libpq finds it in PGPASSWORD or ~/.pgpass)."""
    store = f" --store {shlex.quote(shown_store(store_path))}" if store_path is not None else ""
    return f"python -m analysis scan --resume {run_id}{store}"


def run_level_episodes(history: pd.DataFrame) -> list[tuple[str, str]]:
    """``(title, detail)`` per failed run in a model's history: such a run judged nothing and blocked nothing."""
    if history.empty:
        return []
    failed = history[history["run_status"] == "failed"]
    episodes = []
    for row in failed.to_dict("records"):
        title = (f"Run #{int(row['run_id'])} failed at run level ({word(row['reason'])}): it was about the endpoint "
                 "or setup, not this model, and it blocked nothing.")
        episodes.append((title, str(row.get("detail") or "")))
    return episodes


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "unknown"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def catalog_facts(evidence: dict[str, Any]) -> pd.DataFrame:
    """The catalog facts behind a verdict as ``fact, value`` text rows (``unknown`` where missing)."""
    cat = evidence.get("catalog") or {}
    finding = evidence["finding"]
    listed = evidence.get("in_router_list")
    rows = [
        ("pipeline tag", cat.get("pipeline_tag") or finding.get("pipeline_tag")),
        ("library", cat.get("library_name")),
        ("gated", cat.get("gated")),
        ("downloads", cat.get("downloads")),
        ("likes", cat.get("likes")),
        ("created", cat.get("created_at")),
        ("last modified", cat.get("last_modified")),
        ("tags", cat.get("tags")),
        ("probed provider's mapping", f"{_text(finding.get('mapping_status'))} "
                                      f"(task {_text(finding.get('mapping_task'))})"),
        ("router lists it", "not read" if listed is None else "yes" if listed else "no"),
        ("router providers", evidence.get("router_providers")),
    ]
    return pd.DataFrame([(name, _text(value)) for name, value in rows], columns=["fact", "value"])


def kpi_deltas(trend: pd.DataFrame, run_id: int) -> dict[str, int | None]:
    """Change of ``working``, ``blocked`` and ``transient`` since the previous run in ``trend`` (``None``: no
    earlier run, or ``run_id`` is not in it)."""
    keys = ("working", "blocked", "transient")
    if trend.empty or run_id not in set(trend["run_id"]):
        return dict.fromkeys(keys)
    ordered = trend.sort_values("run_id")
    now = ordered[ordered["run_id"] == run_id].iloc[0]
    before = ordered[ordered["run_id"] < run_id]
    if before.empty:
        return dict.fromkeys(keys)
    prev = before.iloc[-1]
    return {k: int(now[k]) - int(prev[k]) for k in keys}


def scan_time(timestamp: str | None, now: datetime) -> tuple[str, str]:
    """``(age, when)`` of a stored UTC timestamp: ``("12m ago", "2025-07-15 12:00 UTC")``; ``unknown`` if missing.

    The age is short, to fit a KPI tile.

    ``now`` must be timezone-aware.
    """
    if not timestamp:
        return "unknown", "unknown"
    try:
        moment = datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
    except ValueError:
        return "unknown", "unknown"
    seconds = max((now - moment).total_seconds(), 0)
    if seconds < 60:
        age = "just now"
    elif seconds < 3600:
        age = f"{seconds // 60:.0f}m ago"
    elif seconds < 2 * 86400:
        age = f"{seconds // 3600:.0f}h ago"
    else:
        age = f"{seconds // 86400:.0f}d ago"
    return age, moment.strftime("%Y-%m-%d %H:%M UTC")


def run_summary(run: Run) -> tuple[str, str, str]:
    """``(kind, title, detail)`` summing up a finished scan from its stored run; ``kind`` is ``ok`` or ``failed``.

    The scan ran in a process of its own: the store is what it left.
    """
    run_id, status = int(run.id), str(run.status)

    def count(name: str) -> int:
        value = getattr(run, name)
        return 0 if value is None or value != value else int(value)

    if status in ("ok", "partial"):
        took = run.duration_s
        took_text = f" in {float(took):.1f} s" if took is not None and took == took else ""
        predicted = " (predicted: no chat request was sent, nothing blocked)" if run.mode == "predict" else ""
        title = (f"Run #{run_id} finished{took_text}: {count('n_targets')} targets, {count('n_ok')} working, "
                 f"{count('n_blocked')} blocked, {count('n_transient')} transient{predicted}.")
        if status == "partial":
            return ("failed", title + " Partial: some providers had a run-level fault and were not judged.",
                    str(run.failure_message or ""))
        return "ok", title, ""
    if status == "failed":
        return "failed", (f"Run #{run_id} failed at run level ({word(run.failure_reason)}). Nothing from "
                          "this run was blocked."), str(run.failure_message or "")
    return "failed", f"Run #{run_id} stopped before it finished ({word(status)}).", ""


def progress_text(progress: ScanProgress, now: datetime) -> str:
    """One line of a running scan's progress, from the store: ``Run #7: 12 of 37 targets probed ...``."""
    if progress.targets == 0:
        return f"Run #{progress.run_id}: reading the catalog..."
    verb = "predicted" if progress.mode == "predict" else "probed"
    text = f"Run #{progress.run_id}: {progress.probed} of {progress.targets} targets {verb}"
    if progress.last_saved_at:
        # Seconds, not "just now": a scan that stalled for 50 s must not look busy.
        try:
            saved = datetime.fromisoformat(progress.last_saved_at.replace("Z", "+00:00"))
            seconds = max((now - saved).total_seconds(), 0)
            text += f", last result saved {seconds:.0f} s ago" if seconds < 60 else \
                f", last result saved {scan_time(progress.last_saved_at, now)[0]}"
        except ValueError:
            pass
    return text + "."


HF_HOSTS = ("huggingface.co", "router.huggingface.co")


def env_token_allowed(*urls: str) -> bool:
    """Whether the app's own ``HF_TOKEN`` may be sent to all of ``urls``: Hugging Face hosts only."""
    from urllib.parse import urlsplit

    for url in urls:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme != "https" or not (host in HF_HOSTS or host.endswith(".huggingface.co")):
            return False
    return True


def _badge(colour: str | None) -> str:
    # A tinted background and a coloured left border: readable in light and dark themes.
    return f"background-color: {colour}26; border-left: 4px solid {colour}" if colour else ""


def reason_badge(reason: Any) -> str:
    """The CSS of a reason cell: its colour from the one palette (charts.REASON_COLORS)."""
    from analysis.outputs.charts import REASON_COLORS

    return _badge(REASON_COLORS.get(str(reason)))


def action_badge(action: Any) -> str:
    """The CSS of an action cell: its colour from the one palette (charts.ACTION_COLORS)."""
    from analysis.outputs.charts import ACTION_COLORS

    return _badge(ACTION_COLORS.get(str(action)))
